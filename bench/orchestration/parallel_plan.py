"""What `bench plan --executor ray` shows: which steps Ray may run at once and which wait (pure)."""

from __future__ import annotations

from bench.orchestration.scheduler import Step, eval_base


def parallel_view(steps: list[Step]) -> list[str]:
    """What Ray may run at once (as GPUs allow) and what waits for which trainings."""
    bases: dict[tuple, list[Step]] = {}
    for step in steps:
        bases.setdefault(eval_base(step), []).append(step)
    trainings = [s for s in steps if s.phase == "train"]
    lines = [f"at once, as free GPUs allow: {len(trainings)} trainings, and evaluations of bases with none"]
    lines += [f"  train {s.cell.id}  ({_asks(s, 'train')})" for s in trainings]
    for base_steps in bases.values():
        evals = [s for s in base_steps if s.phase == "eval"]
        if not evals:
            continue
        waits = sum(s.phase == "train" for s in base_steps)
        when = f"after its {waits} trainings" if waits else "at once"
        lines.append(f"one evaluation task {when} ({_asks(evals[0], 'eval')}), base loaded once for:")
        lines += [f"  eval  {s.cell.id}" for s in evals]
    return lines


def _asks(step: Step, phase: str) -> str:
    cell = step.cell
    if phase == "train" and cell.nodes > 1:
        return f"{cell.nodes} nodes x {cell.gpus_per_node} GPUs, one placement group"
    return f"{cell.gpus_per_node} GPUs on one node"
