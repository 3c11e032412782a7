"""The tables of benchmarks/video_cpu.py (`--report`): one row per model and task, 95% intervals in brackets."""

from __future__ import annotations

def _cell(r: dict, k: str, digits: int = 3) -> str:
    if k not in r:
        return "-"
    ci = r.get(f"{k}_ci")
    return f"{r[k]:.{digits}f}" + (f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]" if ci else "")


def _cost(r: dict) -> str:
    return f"{r['gmacs']:.3f}" if "gmacs" in r else "-"


def markdown(rows: list[dict], models: list[str], tasks: list[str]) -> str:
    """Generation rows, then completion rows, in the order of `models` and `tasks`."""
    order = {name: i for i, name in enumerate(models)}
    rows = sorted(rows, key=lambda r: (order.get(r["model"], len(order)), tasks.index(r["task"])))
    gen = [r for r in rows if r["task"] == "generation"]
    lines = ["| model | masks | parameters | GFLOPs / clip | clips | class acc | frames agree | coherent motion | "
             "clip FD |", "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r.get('video_masks', '?')} | {r['params']:,} | {_cost(r)} | {r['clips']} | "
              f"{_cell(r, 'class_acc')} | {_cell(r, 'frames_agree')} | {_cell(r, 'coherent_motion')} | "
              f"{_cell(r, 'fd_video', 1)} |" for r in gen]
    lines += ["", "| model | masks | parameters | GFLOPs / clip | task | clips | direction agrees with given | "
              "centroid error (px) |", "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r.get('video_masks', '?')} | {r['params']:,} | {_cost(r)} | {r['task']} | "
              f"{r['clips']} | {_cell(r, 'direction_agree_given')} | {_cell(r, 'centroid_error', 2)} |"
              for r in rows if r["task"] != "generation"]
    return "\n".join(lines) + "\n"


def experiments_markdown(rows: list[dict]) -> str:
    if not rows:
        return ""
    lines = ["", "| run | masks | batch x steps | task | clips | class acc | coherent motion | clip FD | "
             "direction agrees with given | centroid error (px) |", "|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r.get('video_masks', '?')} | {r.get('global_batch_size', '?')} x "
              f"{r['steps_trained']} | {r['task']} | {r['clips']} | {_cell(r, 'class_acc')} | "
              f"{_cell(r, 'coherent_motion')} | "
              f"{_cell(r, 'fd_video', 1)} | {_cell(r, 'direction_agree_given')} | {_cell(r, 'centroid_error', 2)} |"
              for r in rows]
    return "\n".join(lines) + "\n"
