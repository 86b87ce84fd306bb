"""Where the hybrid's fast path spends its head time, and what does (not) shorten it.

    python benchmarks/profile_head.py [--out benchmarks/results/profile_head.json] [--markdown FILE]
    python benchmarks/profile_head.py --render JSON [--markdown FILE]     # measures nothing

``speed.py`` shows the hybrid near its 10x goal on a CPU (book/measured/speed_cpu.md): its fast
path trains the LSTM(32) -> LSTM(16) -> LSTM(8) head for 15 epochs on stored 7x7x2048 features,
and that costs a large share of the one backbone pass, which bounds the speed-up. This script
takes that head apart and tries the cures one might reach for, each on the same features, side
by side in one run, in interleaved rounds (the fastest kept, since a shared machine drifts):

- what ``fit`` costs with no LSTM at all (features -> average -> sigmoid unit), with one LSTM(32),
  and with the paper's stack: the head's time split into framework and recurrent steps;
- the paper's head with ``unroll=True``, with ``steps_per_execution`` of one epoch, with the
  input projection hoisted out of the time loop (one large matmul instead of 49 small ones;
  checked here to compute the same function), and compiled with XLA (TensorFlow only). Keras
  refuses XLA while TensorFlow's op determinism is on, and ``cxr_utils.runtime.set_seed`` turns
  it on for reproducible runs; so this script seeds with ``keras.utils.set_random_seed`` alone.

Random features of the real shape are used: the arithmetic, not the values, sets the time.
Every time is scaled to the paper's protocol (``cxr_utils.config.PROTOCOL``: 15 epochs of
800 + 100 feature maps, batch 32), and reported beside its ratio to the paper's head measured in
the same run. The rendering (``--render``) opens with a summary of the ratios and of the
run-to-run spread, the figures book/reproducibility cites.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling modules below
from rendering import (  # noqa: E402
    REPO_ROOT, markdown_table, measured_line, protocol_record, record_protocol, render_only, show_tables, summary,
    write_record,
)
from timing import log, timed  # noqa: E402

from cxr_utils.config import PROTOCOL  # noqa: E402  (no Keras)

FEATURE_SHAPE = (7, 7, 2048)


def hoisted_lstm_cell_class():
    """An LSTM cell that receives its inputs already multiplied by the input kernel (plus bias).

    Applied after a ``Dense(4 * units)`` over the whole sequence, it computes exactly what
    ``keras.layers.LSTM`` computes (gate order i, f, c, o; sigmoid and tanh), with the input
    projection done once per sequence instead of once per time step.
    """
    import keras
    from keras import ops

    class HoistedLSTMCell(keras.layers.Layer):
        def __init__(self, units, **kwargs):
            super().__init__(**kwargs)
            self.units = units
            self.state_size = [units, units]
            self.output_size = units

        def build(self, input_shape):
            self.recurrent_kernel = self.add_weight(
                shape=(self.units, 4 * self.units), initializer="orthogonal", name="recurrent_kernel")

        def call(self, projected, states, training=False):
            h, c = states
            z = projected + ops.matmul(h, self.recurrent_kernel)
            i, f, g, o = ops.split(z, 4, axis=-1)
            c = ops.sigmoid(f) * c + ops.sigmoid(i) * ops.tanh(g)
            h = ops.sigmoid(o) * ops.tanh(c)
            return h, [h, c]

    return HoistedLSTMCell


def build_head(variant: str, feature_shape=FEATURE_SHAPE):
    """The hybrid's head (as ``cxr_utils.models`` builds it) or one of the variants above."""
    import keras
    from keras import layers

    from cxr_utils import models

    units = models.PAPER_LSTM_UNITS
    if variant in ("paper", "steps_per_execution"):
        return models.resnet50_lstm_head(feature_shape, units)
    features = keras.Input(feature_shape, name="features")
    x = layers.Reshape((feature_shape[0] * feature_shape[1], feature_shape[2]))(features)
    if variant == "no_lstm":
        x = layers.GlobalAveragePooling1D()(x)
    elif variant == "lstm32_only":
        x = layers.LSTM(units[0])(x)
    elif variant in ("unroll", "xla"):
        for i, n in enumerate(units):
            x = layers.LSTM(n, return_sequences=i < len(units) - 1, unroll=variant == "unroll")(x)
    elif variant == "hoisted":
        cell = hoisted_lstm_cell_class()
        for i, n in enumerate(units):
            x = layers.Dense(4 * n, name=f"input_projection_{i + 1}")(x)
            x = layers.RNN(cell(n), return_sequences=i < len(units) - 1, name=f"lstm_{i + 1}")(x)
    else:
        raise ValueError(f"unknown variant {variant!r}")
    if variant != "no_lstm":
        x = layers.Dropout(0.2)(x)
    return keras.Model(features, layers.Dense(1, activation="sigmoid")(x), name=f"head_{variant}")


def copy_lstm_weights_to_hoisted(lstm_head, hoisted_head):
    """Give the hoisted head the paper head's weights (LSTM kernel+bias -> Dense, recurrent
    kernel -> cell), so the two can be checked to compute the same function."""
    from keras import layers

    lstms = [layer for layer in lstm_head.layers if isinstance(layer, layers.LSTM)]
    dense = [layer for layer in hoisted_head.layers if layer.name.startswith("input_projection_")]
    rnns = [layer for layer in hoisted_head.layers if isinstance(layer, layers.RNN)]
    for lstm, projection, rnn in zip(lstms, dense, rnns, strict=True):
        kernel, recurrent_kernel, bias = lstm.get_weights()
        projection.set_weights([kernel, bias])
        rnn.set_weights([recurrent_kernel])
    hoisted_head.layers[-1].set_weights(lstm_head.layers[-1].get_weights())


VARIANTS = ("no_lstm", "lstm32_only", "paper", "unroll", "steps_per_execution", "hoisted", "xla")
LABELS = {
    "no_lstm": "no LSTM (features -> average -> sigmoid): fit, feeding, validation",
    "lstm32_only": "LSTM(32) alone",
    "paper": "the paper's head, LSTM(32) -> LSTM(16) -> LSTM(8), as the fast path trains it",
    "unroll": "paper's head, unroll=True",
    "steps_per_execution": "paper's head, steps_per_execution = one epoch",
    "hoisted": "paper's head, input projection hoisted out of the time loop",
    "xla": "paper's head, XLA (jit_compile=True, op determinism off)",
}


def fit_seconds(variant, train, val, epochs):
    import keras

    from cxr_utils import training

    batch = PROTOCOL.batch_size
    options = {
        "steps_per_execution": {"steps_per_execution": -(-len(train[0]) // batch)},
        "xla": {"jit_compile": True},
    }.get(variant, {})
    keras.utils.set_random_seed(0)  # not runtime.set_seed: op determinism would forbid XLA
    head = training.compile_for_training(build_head(variant), **options)
    # Tracing (and XLA compilation) is a one-off: timed apart.
    _, warm_up_s = timed(head.fit, train[0][: 2 * batch], train[1][: 2 * batch],
                         validation_data=(val[0][:batch], val[1][:batch]), batch_size=batch, epochs=1, verbose=0)
    _, seconds = timed(head.fit, *train, validation_data=val, batch_size=batch, epochs=epochs, shuffle=True,
                       verbose=0)
    return warm_up_s, seconds * PROTOCOL.epochs / epochs


def random_features(n, rng):
    """``n`` feature maps and labels; ReLU feature maps are non-negative: uniform [0, 1) has the
    right shape and sign."""
    return rng.random((n, *FEATURE_SHAPE), dtype=np.float32), rng.integers(0, 2, n).astype(np.float32)


def time_key(epochs=PROTOCOL.epochs) -> str:
    """The record's column of a head's training time, scaled to the protocol's epochs."""
    return f"head_s_per_{epochs}_epochs"


def profile(epochs, rounds, variants):
    import keras

    rng, sizes = np.random.default_rng(0), PROTOCOL.split_sizes()
    train, val = random_features(sizes["train"], rng), random_features(sizes["val"], rng)
    fit_seconds("no_lstm", train, val, 1)  # the process's first fit pays one-off costs; not counted
    if keras.backend.backend() != "tensorflow":
        variants = [v for v in variants if v != "xla"]
    measured = {variant: [] for variant in variants}
    warm_up = {}
    for round_number in range(rounds):
        for variant in variants:
            warm_up[variant], seconds = fit_seconds(variant, train, val, epochs)
            measured[variant].append(seconds)
            log(f"  round {round_number + 1}: {variant} {seconds:.1f} s per {PROTOCOL.epochs} epochs")
    paper_s = min(measured["paper"])
    return [
        {
            "variant": variant,
            "what": LABELS[variant],
            time_key(): round(min(seconds), 1),
            "vs_paper_head": round(min(seconds) / paper_s, 2),
            "rounds_s": [round(s, 1) for s in seconds],
            "one_off_warm_up_s": round(warm_up[variant], 1),
        }
        for variant, seconds in measured.items()
    ]


def check_hoisted_matches_lstm(log=log):
    """The hoisted variant is only a fair comparison if it computes the paper head's function."""
    import keras

    keras.utils.set_random_seed(0)
    # Small values keep the gates off saturation, where any two implementations agree trivially.
    features = 0.01 * np.random.default_rng(1).random((4, *FEATURE_SHAPE), dtype=np.float32)
    paper, hoisted = build_head("paper"), build_head("hoisted")
    copy_lstm_weights_to_hoisted(paper, hoisted)
    expected, got = np.asarray(paper(features)), np.asarray(hoisted(features))
    if np.ptp(expected) == 0:
        raise AssertionError("the check's inputs saturate the head: every output is the same")
    gap = float(np.max(np.abs(expected - got)))
    log(f"  hoisted head vs paper head, same weights: largest difference {gap:.2e}")
    if gap > 1e-4:
        raise AssertionError(f"the hoisted head does not compute the paper head's function (gap {gap})")
    return gap


CURES = ("unroll", "steps_per_execution", "hoisted", "xla")


def headlines(results: dict, protocol: dict) -> list[str]:
    """The figures the prose cites (book/reproducibility), from the results alone."""
    rows = {row["variant"]: row for row in results["variants"]}
    ratio = {variant: row["vs_paper_head"] for variant, row in rows.items()}
    items = [f"**The paper's head** trains its {protocol['epochs']} epochs on stored feature maps in "
             f"{rows['paper'][time_key(protocol['epochs'])]} s; the ratios below are to that time, "
             "measured in the same run (below 1: faster)."]
    if {"no_lstm", "lstm32_only"} <= set(ratio):
        items.append(f"**Where the time goes**: `fit` with no LSTM at all (feeding, optimiser, validation) "
                     f"takes {ratio['no_lstm']} of it, the first LSTM(32) alone {ratio['lstm32_only']}; the two "
                     f"smaller LSTMs add the remaining {1 - ratio['lstm32_only']:.2f}.")
    spreads = {variant: max(row["rounds_s"]) / min(row["rounds_s"]) - 1 if min(row["rounds_s"]) > 0 else 0.0
               for variant, row in rows.items()}
    widest = max(spreads, key=spreads.get)
    cures = [variant for variant in CURES if variant in ratio]
    if cures:
        best = min(cures, key=ratio.get)
        verdict = ("none is faster" if ratio[best] >= 1 else
                   f"the fastest, `{best}`, saves {1 - ratio[best]:.0%}"
                   + (", less than the run-to-run spread" if 1 - ratio[best] < spreads[widest] else ""))
        items.append("**The cures**: " + ", ".join(f"`{variant}` {ratio[variant]}" for variant in cures)
                     + f"; {verdict}.")
    if len(rows["paper"]["rounds_s"]) > 1:
        items.append(f"**Run-to-run spread**: between its {len(rows['paper']['rounds_s'])} rounds a variant's "
                     f"time moved by up to {spreads[widest]:.0%} (`{widest}`), the paper head's by "
                     f"{spreads['paper']:.0%}.")
    return items


def render(record: dict) -> str:
    """The profile's summary and table as Markdown, from its JSON record (``--render``)."""
    results = record["results"]
    protocol = record_protocol(results)
    rows = [{k: v for k, v in row.items() if k != "rounds_s"} for row in results["variants"]]
    title = (f"The hybrid's head, {protocol['epochs']} epochs of {protocol['train']} + {protocol['val']} stored "
             f"feature maps, batch {protocol['batch_size']} (fastest of {record['settings']['rounds']} "
             "interleaved rounds)")
    return "\n".join([
        measured_line(record), summary(headlines(results, protocol)), markdown_table(title, rows),
        f"Hoisted head vs paper head with the same weights: largest output difference "
        f"{results['hoisted_max_difference']:.1e}.\n",
    ])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=5,
                        help=f"epochs measured per run, scaled to the protocol's {PROTOCOL.epochs} (default 5)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds; the fastest is kept (default 2)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated subset of {','.join(VARIANTS)}")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "profile_head.json",
                        help="the JSON record (default benchmarks/results/profile_head.json)")
    parser.add_argument("--markdown", type=Path, help="also write the summary and table as Markdown here (the "
                        "book includes book/measured/head_profile_cpu.md)")
    parser.add_argument("--render", metavar="JSON", help="only turn an earlier run's JSON into the summary and "
                        "table (with --markdown, into that file); measures nothing")
    args = parser.parse_args(argv)
    if args.render:
        return render_only(parser, args.render, args.markdown, render)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown or "paper" not in variants:
        parser.error(f"--variants must include 'paper' and name only {', '.join(VARIANTS)}; got {args.variants!r}")

    from cxr_utils import runtime

    start = time.perf_counter()
    log("checking the hoisted head")
    hoisted_gap = check_hoisted_matches_lstm()
    log(f"profiling {len(variants)} head variants, {args.rounds} rounds of {args.epochs} epochs")
    rows = profile(args.epochs, args.rounds, variants)
    record = runtime.run_record(vars(args), time.perf_counter() - start,
                                results={"variants": rows, "hoisted_max_difference": hoisted_gap,
                                         "protocol": protocol_record()})
    record = write_record(record, args.out)
    show_tables(render(record), args.out, args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
