"""benchmarks/speed.py's record as a reader sees it: the figures the prose cites and the tables
(``python benchmarks/speed.py --render JSON``; book/measured/speed_cpu.md is this rendering)."""

from __future__ import annotations

from rendering import markdown_table, measured_line, record_protocol, summary

from cxr_utils.config import REGISTRY, model_spec, paper_names  # no Keras

GOALS = {"fast_path_speedup_at_least": 10, "loader_overhead_pct_at_most": 5}
LSTM = model_spec("lstm")  # the cheapest model, on which the loader's share of training time is largest


def _goal(goal, unit, met, missed) -> str:
    text = f"goal: {goal}{unit}"
    if met:
        text += ", met by " + " and ".join(met)
    if missed:
        text += (", not by " if met else ", missed by ") + " and ".join(missed)
    return text


def headlines(results: dict, protocol: dict) -> list[str]:
    """The figures the prose cites (book/reproducibility, README), from the results alone."""
    names, goals = paper_names(), {**GOALS, **results.get("goals", {})}
    name = lambda model: names.get(model, model)  # noqa: E731
    epochs, images = protocol["epochs"], protocol["train"] + protocol["val"]
    items = []
    rows = results.get("paper_way_vs_fast_path", [])
    if rows:
        goal = goals["fast_path_speedup_at_least"]
        items.append(
            f"**Fast path vs the paper's way** ({images} images x {epochs} epochs, frozen backbone): "
            + ", ".join(f"{name(r['model'])} {r['speedup']}x faster ({r['paper_way_s']:.0f} s -> "
                        f"{r['fast_path_s']:.0f} s)" for r in rows)
            + "; " + _goal(f"at least {goal}", "x", [name(r["model"]) for r in rows if r["speedup"] >= goal],
                           [name(r["model"]) for r in rows if r["speedup"] < goal]) + ".")
        bounds = []
        for r in rows:
            features, head = r["fast_path_features_s"], r["fast_path_head_s"]
            bound = (epochs * features + head) / (features + head)
            bounds.append(f"{name(r['model'])}'s head takes {head / features:.0%} of its backbone pass "
                          f"({head} s vs {features} s), so its speed-up is at most {bound:.1f}x")
        items.append(f"**What bounds the speed-up**: the paper's way pays the backbone pass {epochs} times "
                     f"and the head's epochs once, the fast path each once; " + "; ".join(bounds) + ".")
    pipeline = results.get("data_pipeline")
    if pipeline:
        goal, share = goals["loader_overhead_pct_at_most"], pipeline["loader_overhead_pct_load_once"]
        items.append(
            f"**Data pipeline** ({pipeline['images']} images): reading the on-disk cache takes "
            f"{pipeline['cached_s_per_load']} s, decoding and resizing every PNG "
            f"{pipeline['decode_every_epoch_s_per_epoch']} s, {pipeline['cache_speedup']}x longer "
            f"({pipeline['protocol_decode_every_epoch_s']} s if done in each of {epochs} epochs). Loaded once "
            f"per run, the loader costs {share}% of the {name(LSTM.id)}'s training time (goal: at most {goal}%, "
            f"{'met' if share <= goal else 'missed'}); reloaded in every epoch it would cost "
            f"{pipeline['loader_overhead_pct_if_reloaded_each_epoch']}%.")
    by_batch: dict = {}
    for row in results.get("throughput", []):
        by_batch.setdefault(row.get("batch_size"), []).append(row)
    for batch, rows in by_batch.items():
        items.append(
            f"**Throughput** end to end, backbone trainable{f', batch {batch}' if batch else ''} "
            "(images/s, training / inference): "
            + ", ".join(f"{name(r['model'])} {r['train_images_per_s']} / {r.get('inference_images_per_s', '-')}"
                        for r in rows) + ".")
    whole = results.get("paper_protocol")
    if whole:
        totals = ", ".join(f"{variant} {seconds} s" for variant, seconds in whole["total_s"].items())
        items.append(f"**The whole protocol**, measured in full ({len(REGISTRY)} models trained and tested, "
                     f"compilation included): {totals or 'no variant finished'}.")
    return items


def render(record: dict) -> str:
    """The benchmark's summary and tables as Markdown, from its JSON record (``--render``)."""
    result = record["results"]
    protocol = record_protocol(result)
    parts = [measured_line(record, ", mixed float16" if result.get("mixed_precision") else "")]
    items = headlines(result, protocol)
    if "incomplete" in record:
        items.insert(0, f"**Incomplete run**: {record['incomplete']}.")
    if items:
        parts.append(summary(items))
    if "paper_way_vs_fast_path" in result:
        parts.append(markdown_table(
            f"Paper's way (frozen backbone in fit, every epoch) vs fast path (features once), "
            f"{protocol['train'] + protocol['val']} images x {protocol['epochs']} epochs",
            result["paper_way_vs_fast_path"]))
    if "data_pipeline" in result:
        parts.append(markdown_table("Data pipeline", [result["data_pipeline"]]))
    if "throughput" in result:
        parts.append(markdown_table("Throughput, end to end (backbone trainable)", result["throughput"]))
    if "paper_protocol" in result:
        whole = result["paper_protocol"]
        totals = ", ".join(f"{k} {v} s" for k, v in whole["total_s"].items())
        parts.append(markdown_table(
            f"The whole protocol, measured in full (train {whole['images']['train']}, val "
            f"{whole['images']['val']}, test {whole['images']['test']}, {whole['epochs']} epochs, "
            f"compilation included); totals: {totals}", whole["models"]))
    gpu = f", GPU peak {result['gpu_peak_memory_mb']} MB" if "gpu_peak_memory_mb" in result else ""
    parts.append(f"Peak host memory {result['peak_memory_mb']} MB{gpu}.\n")
    return "\n".join(parts)
