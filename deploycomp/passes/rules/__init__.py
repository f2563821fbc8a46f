"""The rewrite rules the optimizer applies, grouped by what they do.

:data:`DEFAULT_RULES` is the one explicit tuple the ``default`` pipeline runs; each
group's module docstring states the algebra its rules rely on.
"""

from deploycomp.passes.rules.activations import activation_rules
from deploycomp.passes.rules.batchnorm import batchnorm_rules
from deploycomp.passes.rules.conv_affine import affine_into_conv_rules, conv_affine_rules
from deploycomp.passes.rules.layer_norm import layer_norm_rules
from deploycomp.passes.rules.masks import mask_rules
from deploycomp.passes.rules.no_op import no_op_rules
from deploycomp.passes.rules.slices import slice_rules
from deploycomp.passes.rules.transpose import transpose_rules
from onnxscript.rewriter.rules import common as _onnxscript_rules

__all__ = ["DEFAULT_RULES", "RULE_GROUPS", "TFLITE_RULES"]

RULE_GROUPS: dict[str, tuple] = {
    "no-op": no_op_rules(),
    "batchnorm": batchnorm_rules(),
    "conv-affine": conv_affine_rules(),
    "activations": activation_rules(),
    "layer-norm": layer_norm_rules(),
    "transpose": transpose_rules(),
    "gemm": (_onnxscript_rules.matmul_add_to_gemm_rule, _onnxscript_rules.transpose_b_matmul_add_to_gemm_rule),
    "slices": slice_rules(),
    "masks": mask_rules(),
}

DEFAULT_RULES: tuple = tuple(rule for group in RULE_GROUPS.values() for rule in group)

TFLITE_RULES: tuple = DEFAULT_RULES + affine_into_conv_rules()
"""TFLite's pipeline also folds an affine *before* a Conv into it
(:func:`deploycomp.passes.rules.conv_affine.affine_into_conv_rules`)."""
