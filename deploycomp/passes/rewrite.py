"""Pattern rewriting: apply a named tuple of rules, and say why a rule did not fire.

Rules are onnxscript rewrite rules (``pattern`` + ``check`` + ``rewrite``); a failed
``check`` carries a reason. :func:`explain` runs each rule alone under onnxscript's
``MatchingTracer`` on a copy of the model and reports, for every rule that would not
fire, the closest partial match and its failure reason, so "why did Conv+BN not
fuse?" has an answer (``deploycomp inspect --explain-passes``: rules that fired during
the real optimization are counted there; the others are asked on the optimized graph).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Sequence

import onnx_ir as ir
from onnxscript.rewriter import MatchingTracer, RewriteRuleSet
from onnxscript.rewriter._basics import MatchStatus

from deploycomp.passes.manager import all_nodes

__all__ = ["RewriteRulesPass", "RuleExplanation", "explain", "rule_name"]


class RewriteRulesPass(ir.passes.InPlacePass):
    """Apply ``rules`` once over the graph (the pass manager iterates to a fixed point).

    With ``count_per_rule`` the rules are applied one at a time so that :attr:`fired`
    can say how often each one rewrote the graph (slower; used by ``--explain-passes``).
    """

    def __init__(self, name: str, rules: Sequence, count_per_rule: bool = False):
        self.name = name
        self.rules = tuple(rules)
        self.count_per_rule = count_per_rule
        self.fired: Counter[str] = Counter()
        self._needs = [required_ops(rule) for rule in self.rules]
        self._rooted = [_Rooted(rule, root) if (root := _root_op(rule)) else rule for rule in self.rules]

    def __str__(self) -> str:
        return self.name

    def _applicable(self, model: ir.Model, rules: Sequence) -> list:
        """Those of ``rules`` (``self.rules`` or their rooted forms) whose every pattern op
        occurs in the graph: matching the rest is wasted time."""
        present = {n.op_type for n in all_nodes(model.graph)}
        return [r for r, needs in zip(rules, self._needs) if needs is None or needs <= present]

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        rules = self._applicable(model, self.rules if self.count_per_rule else self._rooted)
        if not rules:
            return ir.passes.PassResult(model, False)
        if not self.count_per_rule:
            return ir.passes.PassResult(model, bool(RewriteRuleSet(rules).apply_to_model(model)))
        total = 0
        for rule in rules:
            count = RewriteRuleSet([rule]).apply_to_model(model)
            self.fired[rule_name(rule)] += count
            total += count
        return ir.passes.PassResult(model, bool(total))


@dataclass
class RuleExplanation:
    rule: str
    fired: int
    reason: str
    node: str = ""
    near_miss: bool = False
    """The closest match got past the root node (a check failed or a deeper op differed)."""

    def describe(self) -> str:
        where = f" (closest at node '{self.node}')" if self.node else ""
        return f"{self.rule}: fired {self.fired}x" if self.fired else f"{self.rule}: {self.reason}{where}"


def required_ops(rule) -> frozenset[str] | None:
    """Op types a rule's pattern needs, or None if some node pattern matches any op."""
    ops = set()
    for node in rule._target_pattern:  # onnxscript keeps the pattern private; read-only use
        ident = node.op_identifier()
        value = ident[1] if ident else getattr(node.op, "_value", None)
        if not isinstance(value, str):
            return None
        ops.add(value)
    return frozenset(ops)


def _root_op(rule) -> tuple[str, str] | None:
    """(domain, op type) of the node a rule's pattern ends in (its first, for a pattern
    of several outputs: the one matched against the node tried), where it names one."""
    node = rule._target_pattern.output_nodes[0]  # (read-only, as in required_ops)
    domain, op = (getattr(x, "_value", None) for x in (node.domain, node.op))
    return (domain, op) if isinstance(domain, str) and isinstance(op, str) else None


class _Rooted:
    """A rule that is tried only on nodes of its pattern's root op. onnxscript tries every
    rule on every node and sets up a match before it looks at the op type: on an SVM's
    8000-node probability iteration the default rules took 25 s a pass."""

    def __init__(self, rule, root: tuple[str, str]):
        self._rule, self._domain, self._op = rule, ("" if root[0] == "ai.onnx" else root[0]), root[1]

    def __getattr__(self, name: str):
        return getattr(self._rule, name)

    def try_rewrite(self, model, graph_or_function, node: ir.Node, **kwargs):
        if node.op_type != self._op or (node.domain if node.domain != "ai.onnx" else "") != self._domain:
            return None
        return self._rule.try_rewrite(model, graph_or_function, node, **kwargs)


def rule_name(rule) -> str:
    return getattr(rule, "name", None) or type(rule).__name__


def explain(model: ir.Model, rules: Sequence) -> list[RuleExplanation]:
    """For each rule: how often it fires on ``model`` alone, or why it does not. Each rule
    runs on a clone that shares the model's tensors: a serialized copy per rule took a
    194 MB tree ensemble's ``inspect --explain-passes`` past 24 GB."""
    out = []
    for rule in rules:
        trial = model.clone()
        tracer = MatchingTracer()
        fired = RewriteRuleSet([rule]).apply_to_model(trial, tracer=tracer)
        if fired:
            out.append(RuleExplanation(rule_name(rule), fired, "fired"))
            continue
        matches = [m for ms in tracer.best_matches_map.values() for m in ms]
        if not matches:
            out.append(RuleExplanation(rule_name(rule), 0, "no node of the pattern's root op type"))
            continue
        best = max(matches, key=lambda m: m.score())
        reason = best.match_result.reason or "pattern did not match"
        depth = len(best.match_result.nodes)
        if best.status == MatchStatus.CONDITION_FAILED:
            reason = f"check failed: {reason}"
        else:
            reason = f"partial match ({depth} nodes): {reason}"
        near = best.status == MatchStatus.CONDITION_FAILED or depth > 1
        out.append(RuleExplanation(rule_name(rule), 0, reason, best.root_node.name or best.root_node.op_type, near))
    return out
