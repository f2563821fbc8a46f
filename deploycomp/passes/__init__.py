"""Graph passes over onnx-ir, one per module, composed into named pipelines."""

from deploycomp.passes.manager import PassLog, Pipeline, count_nodes, run_passes
from deploycomp.passes.pipelines import PIPELINES, build_pipeline, pipeline_names

__all__ = ["PIPELINES", "PassLog", "Pipeline", "build_pipeline", "count_nodes", "pipeline_names", "run_passes"]
