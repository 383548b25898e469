"""Pipelines: the fit (read -> plan -> split -> preprocess -> parts -> ensemble -> track ->
`FittedModel`), and later retrain and tune, each readable top to bottom."""
