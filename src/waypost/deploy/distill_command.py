"""`waypost distill`: the student for a teacher model directory, by the teacher's parts: fewer
Transformer layers for a text model (`distill_text`), one small MLP for everything else (`distill`).
Kept apart so the two recipes do not import each other."""
from __future__ import annotations

from typing import Any


def distill_command(teacher_dir: Any, train_data: Any, output: Any, student: str | list[int] = "small",
                    valid_data: Any | None = None, temperature: float = 2.0,
                    alpha: float = 0.5) -> dict[str, Any]:
    """`waypost distill TEACHER_DIR --student small --data train.csv -o student/`."""
    from waypost.deploy.report import format_report
    from waypost.predictor import Predictor

    teacher = Predictor.load(teacher_dir)
    from waypost.models.text_model import TextModel

    if any(isinstance(part, TextModel) for part in teacher.parts_.values()):  # a Transformer: fewer layers
        from waypost.deploy.distill_text import distill_text_predictor, student_layers

        student_model, report = distill_text_predictor(teacher, train_data, valid_data, layers=student_layers(student),
                                                       temperature=temperature, alpha=alpha)
    else:
        from waypost.deploy.distill import distill_predictor

        student_model, report = distill_predictor(teacher, train_data, valid_data, student=student,
                                                  temperature=temperature, alpha=alpha)
    report["output"] = str(student_model.save(output))
    print(format_report(report))
    print(f"saved the student model to {report['output']}")
    return report
