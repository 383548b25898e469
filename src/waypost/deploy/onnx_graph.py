"""One ONNX graph for the whole model: the MLP (torch.onnx dynamo export), the trees, and the blend.

Inputs are the three preprocessed views (`numeric` float32, `categorical` int64, `gbm` float32,
only those the parts use); the output `output` holds class probabilities (n, k) or the standardised
regression value (n, 1). A single session means one `run` per batch in the server and a graph that
bare onnxruntime (or any ONNX runtime) can execute with nothing from waypost.
"""
from __future__ import annotations

import io
import logging
import warnings
from typing import Any

import numpy as np

OPSET = 20
OUTPUT = "output"


def softmax_for(task: str | None) -> bool:
    """Whether a network's graph ends in softmax: the task's output activation (`waypost.tasks`);
    no task means a classifier, as the exporters always assumed."""
    if task is None:
        return True
    from waypost.tasks import get_task

    return get_task(task).output_activation() == "softmax"


def export_mlp(net: Any, task: str, sample: Any) -> Any:
    """The tabular MLP (probabilities for classifiers, the standardised value for regression) as the
    `mlp_out` part the blend merges; only the views with columns become inputs."""
    return export_column_net(net, {}, {}, sample, softmax=softmax_for(task), output="mlp_out")


class _quiet_exporter:
    """The dynamo exporter logs its progress at INFO through several loggers; keep the CLI clean."""

    def __enter__(self) -> None:
        self.levels = {}
        for name in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript"):
            logger = logging.getLogger(name)
            self.levels[name] = logger.level
            logger.setLevel(logging.ERROR)

    def __exit__(self, *exc: Any) -> None:
        for name, level in self.levels.items():
            logging.getLogger(name).setLevel(level)


def merge_graphs(graphs: dict[str, Any]) -> tuple[dict[str, Any], list[Any], list[Any], list[Any], dict[str, str],
                                                   dict[str, int]]:
    """The per-part graphs (each with one output; they share the input names) side by side, every
    name prefixed with the part's but the shared inputs (two parts may end in the same output name):
    (inputs by name, nodes, initializers, functions, part name -> its output edge, opsets)."""
    from onnx import compose

    inputs, nodes, inits, functions, outputs, opsets = {}, [], [], [], {}, {}
    for name, model in graphs.items():
        prefixed = compose.add_prefix(model, f"{name}/", rename_inputs=False, rename_outputs=True)
        outputs[name] = prefixed.graph.output[0].name
        for inp in prefixed.graph.input:
            inputs.setdefault(inp.name, inp)
        nodes += list(prefixed.graph.node)
        inits += list(prefixed.graph.initializer)
        functions += list(prefixed.functions)
        for op in prefixed.opset_import:
            opsets[op.domain] = max(opsets.get(op.domain, 0), op.version)
    return inputs, nodes, inits, functions, outputs, opsets


def merge_parts(parts: dict[str, Any], weights: dict[str, float]) -> Any:
    """Combine the per-part graphs into one with the ensemble's weighted sum."""
    import onnx

    inputs, nodes, inits, functions, outputs, opsets = merge_graphs(parts)
    nodes += blend_nodes(outputs, weights)
    merged = assemble("waypost", parts, inputs, nodes, inits, functions, opsets, OUTPUT,
                      _output_width(next(iter(parts.values()))))
    merged.producer_name = "waypost"
    onnx.checker.check_model(merged)
    return merged


def assemble(name: str, graphs: dict[str, Any], inputs: dict[str, Any], nodes: list[Any], inits: list[Any],
             functions: list[Any], opsets: dict[str, int], output: str, width: Any) -> Any:
    """One ModelProto from `merge_graphs`' pieces plus the nodes built on them: the shared inputs in
    the views' order, one float output (batch, width), the parts' highest opsets and IR version."""
    from onnx import TensorProto, helper

    order = [n for n in ("numeric", "categorical", "gbm") if n in inputs]
    graph = helper.make_graph(nodes, name, [inputs[n] for n in order],
                              [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["batch", width])],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in sorted(opsets.items())],
                              functions=functions)
    model.ir_version = max(m.ir_version for m in graphs.values())
    return model


def blend_nodes(outputs: dict[str, str], weights: dict[str, float], *, output: str = OUTPUT,
                prefix: str = "blend") -> list[Any]:
    """Nodes writing `output`, the weighted sum of each part's output edge (`outputs`: part name ->
    edge; weights by part name, a missing one is 0); node and edge names start with `prefix`."""
    from onnx import TensorProto, helper

    nodes, terms = [], []
    for name, edge in outputs.items():
        w = float(weights.get(name, 0.0))
        const = f"{prefix}/w_{name}"
        nodes.append(helper.make_node("Constant", [], [const], value=helper.make_tensor(const, TensorProto.FLOAT, [], [w]),
                                      name=f"{prefix}/const_{name}"))
        # explicit fp32 boundary: a no-op in fp32 graphs, the cast back from an fp16 MLP otherwise
        nodes.append(helper.make_node("Cast", [edge], [f"{prefix}/{name}_f32"], to=TensorProto.FLOAT,
                                      name=f"{prefix}/cast_{name}"))
        nodes.append(helper.make_node("Mul", [f"{prefix}/{name}_f32", const], [f"{prefix}/{name}"],
                                      name=f"{prefix}/mul_{name}"))
        terms.append(f"{prefix}/{name}")
    nodes.append(helper.make_node("Identity" if len(terms) == 1 else "Sum", terms, [output], name=f"{prefix}/out"))
    return nodes


def _output_width(model: Any) -> Any:
    dims = model.graph.output[0].type.tensor_type.shape.dim
    last = dims[-1] if dims else None
    return last.dim_value if last is not None and last.dim_value else "k"


def build_model_graph(predictor: Any, sample: Any) -> Any:
    """The ONNX ModelProto for a fitted predictor's selected parts and blend weights."""
    parts = {name: part.to_onnx(sample) for name, part in predictor.parts_.items()
             if predictor.blend_weights_.get(name, 0.0) > 0}
    return merge_parts(parts, predictor.blend_weights_)


def export_column_net(net: Any, column_inputs: dict[str, Any], dynamic_axes: dict[str, dict[int, str]],
                      tabular: Any = None, *, softmax: bool = True, output: str = OUTPUT,
                      features: str | None = None) -> Any:
    """A network as one graph: torch.onnx's dynamo exporter (onnxscript), dynamic batch axis.

    Inputs: the column's tensors (`column_inputs`, examples by name: `image`, or `input_ids` and
    `attention_mask`; none for the tabular MLP) with their dynamic axes, then `numeric` /
    `categorical` (only those with columns) when `tabular` (a TabularArrays sample) is given. The
    net is called as net(*columns, numeric, categorical), with (n, 0) tensors for a view without
    columns. Output `output`: class probabilities (`softmax`) or the raw values. `features`: also
    output the column encoder's features under that name (a fused net, `net.encoder` then
    `net.head`: computed once, read by the head and by a GBM beside it).
    """
    import onnx
    import torch

    has_num = tabular is not None and tabular.numeric.shape[1] > 0
    has_cat = tabular is not None and tabular.categorical.shape[1] > 0
    n_col = len(column_inputs)

    class Wrapped(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, *xs: torch.Tensor) -> Any:
            cols, tab = xs[:n_col], iter(xs[n_col:])
            feats = None
            if tabular is None:
                out = self.net(*cols)
            else:
                n = xs[0].shape[0]
                x_num = next(tab) if has_num else torch.zeros((n, 0), dtype=torch.float32)
                x_cat = next(tab) if has_cat else torch.zeros((n, 0), dtype=torch.int64)
                if features is None:
                    out = self.net(*cols, x_num, x_cat)
                else:
                    feats = self.net.encoder(*cols)
                    out = self.net.head(feats, x_num, x_cat)
            out = torch.softmax(out, dim=-1) if softmax else out
            return out if feats is None else (out, feats.float())

    names = list(column_inputs)
    example = list(column_inputs.values())
    if has_num:
        names.append("numeric")
        example.append(torch.from_numpy(np.ascontiguousarray(tabular.numeric[:2], np.float32)))
    if has_cat:
        names.append("categorical")
        example.append(torch.from_numpy(np.ascontiguousarray(tabular.categorical[:2], np.int64)))
    dims: dict[str, Any] = {}
    specs = []
    for name in names:
        axes = dynamic_axes.get(name, {0: "batch"})
        specs.append({axis: dims.setdefault(label, torch.export.Dim(label, min=1)) for axis, label in axes.items()})
    with warnings.catch_warnings(), _quiet_exporter():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            Wrapped().eval(), tuple(example), dynamo=True, input_names=names,
            output_names=[output] if features is None else [output, features],
            dynamic_shapes=(tuple(specs),),  # forward(*xs): one tuple of specs
            opset_version=OPSET, optimize=True, verbose=False,
        )
    buf = io.BytesIO()
    onnx.save_model(program.model_proto, buf)
    return onnx.load_model_from_string(buf.getvalue())


def export_image_net(net: Any, channels: int, size: tuple[int, int], tabular: Any = None, *,
                     task: str | None = None, **names: Any) -> Any:
    """The CNN: input `image` float32 (N, C, H, W) already normalised (+ tabular inputs when fused).
    Output: probabilities (n, k) for a classifier, the standardised value (n, 1) for regression."""
    import torch

    image = torch.zeros((2, channels, size[0], size[1]), dtype=torch.float32)
    return export_column_net(net, {"image": image}, {"image": {0: "batch"}}, tabular, softmax=softmax_for(task),
                             **names)


def export_text_net(net: Any, ids: np.ndarray, mask: np.ndarray, tabular: Any = None, *,
                    task: str | None = None, **names: Any) -> Any:
    """The text model: `input_ids` and `attention_mask` int64 (N, L), both axes dynamic (+ tabular).
    Output: probabilities (n, k) for a classifier, the standardised value (n, 1) for regression."""
    import torch

    seq = {0: "batch", 1: "sequence"}
    inputs = {"input_ids": torch.from_numpy(np.ascontiguousarray(ids[:2], np.int64)),
              "attention_mask": torch.from_numpy(np.ascontiguousarray(mask[:2], np.int64))}
    return export_column_net(net, inputs, {"input_ids": seq, "attention_mask": seq}, tabular,
                             softmax=softmax_for(task), **names)


def export_multi_column_net(net: Any, examples: dict[str, dict[str, Any]], sequence: dict[str, str],
                            tabular: Any = None, *, softmax: bool = True) -> Any:
    """A network over several encoder columns (`waypost.models.fusion.MultiColumnNet`) as one graph.

    `examples[column]` holds the column's example tensors by input name ("<column>/image" float32
    normalised; "<column>/input_ids" and "<column>/attention_mask" int64), in the order the net
    takes them; `sequence[column]` names the dynamic sequence axis of a text column (its own per
    column: two text columns are not padded to one length). The batch axis is dynamic everywhere;
    `numeric` / `categorical` follow as in `export_column_net`, output `output`.
    """
    inputs: dict[str, Any] = {}
    axes: dict[str, dict[int, str]] = {}
    for column, tensors in examples.items():
        for name, tensor in tensors.items():
            inputs[name] = tensor
            axes[name] = {0: "batch", 1: sequence[column]} if column in sequence else {0: "batch"}
    return export_column_net(net, inputs, axes, tabular, softmax=softmax)
