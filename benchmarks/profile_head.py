"""Where the hybrid's fast path spends its head time, and what does (not) shorten it.

    python benchmarks/profile_head.py [--out benchmarks/results/profile_head.json] [--markdown FILE]

``speed.py`` shows the hybrid at the edge of the 10x goal on a CPU (9.9x and 10.1x in two runs):
its fast path trains the LSTM(32) -> LSTM(16) -> LSTM(8) head for 15 epochs on stored 7x7x2048
features, and that costs about 40% of the one backbone pass (book/reproducibility). This script takes that head
apart and tries the cures one might reach for, each on the same features, side by side in one
run, in two interleaved rounds (the faster of the two kept, since this shared machine drifts):

- what ``fit`` costs with no LSTM at all (features -> average -> sigmoid unit), with one LSTM(32),
  and with the paper's stack: the head's time split into framework and recurrent steps;
- the paper's head with ``unroll=True``, with ``steps_per_execution`` of one epoch, with the
  input projection hoisted out of the time loop (one large matmul instead of 49 small ones;
  checked here to compute the same function), and compiled with XLA (TensorFlow only). Keras
  refuses XLA while TensorFlow's op determinism is on, and ``cxr_utils.runtime.set_seed`` turns
  it on for reproducible runs; so this script seeds with ``keras.utils.set_random_seed`` alone.

Random features of the real shape are used: the arithmetic, not the values, sets the time.
Every time is scaled to the protocol's 15 epochs of 800 + 100 feature maps, batch 32, and
reported beside its ratio to the paper's head measured in the same run.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import PROTOCOL, markdown_table, show_tables  # noqa: E402  (the sibling benchmark script)

REPO_ROOT = Path(__file__).resolve().parents[1]
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

    batch = PROTOCOL["batch_size"]
    options = {
        "steps_per_execution": {"steps_per_execution": -(-len(train[0]) // batch)},
        "xla": {"jit_compile": True},
    }.get(variant, {})
    keras.utils.set_random_seed(0)  # not runtime.set_seed: op determinism would forbid XLA
    head = training.compile_for_training(build_head(variant), **options)
    start = time.perf_counter()  # tracing (and XLA compilation) is a one-off: timed apart
    head.fit(train[0][: 2 * batch], train[1][: 2 * batch], validation_data=(val[0][:batch], val[1][:batch]),
             batch_size=batch, epochs=1, verbose=0)
    warm_up_s = time.perf_counter() - start
    start = time.perf_counter()
    head.fit(*train, validation_data=val, batch_size=batch, epochs=epochs, shuffle=True, verbose=0)
    return warm_up_s, (time.perf_counter() - start) * PROTOCOL["epochs"] / epochs


def profile(epochs, rounds, variants, log):
    import keras

    rng = np.random.default_rng(0)
    # ReLU feature maps are non-negative: uniform [0, 1) has the right shape and sign.
    train = (rng.random((PROTOCOL["train"], *FEATURE_SHAPE), dtype=np.float32),
             rng.integers(0, 2, PROTOCOL["train"]).astype(np.float32))
    val = (rng.random((PROTOCOL["val"], *FEATURE_SHAPE), dtype=np.float32),
           rng.integers(0, 2, PROTOCOL["val"]).astype(np.float32))
    fit_seconds("no_lstm", train, val, 1)  # the process's first fit pays one-off costs; not counted
    if keras.backend.backend() != "tensorflow":
        variants = [v for v in variants if v != "xla"]
    measured = {variant: [] for variant in variants}
    warm_up = {}
    for round_number in range(rounds):
        for variant in variants:
            warm_up[variant], seconds = fit_seconds(variant, train, val, epochs)
            measured[variant].append(seconds)
            log(f"  round {round_number + 1}: {variant} {seconds:.1f} s per 15 epochs")
    paper_s = min(measured["paper"])
    return [
        {
            "variant": variant,
            "what": LABELS[variant],
            "head_s_per_15_epochs": round(min(seconds), 1),
            "vs_paper_head": round(min(seconds) / paper_s, 2),
            "rounds_s": [round(s, 1) for s in seconds],
            "one_off_warm_up_s": round(warm_up[variant], 1),
        }
        for variant, seconds in measured.items()
    ]


def check_hoisted_matches_lstm(log):
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


def render(record: dict) -> str:
    hardware = record["hardware"]
    rows = [{k: v for k, v in row.items() if k != "rounds_s"} for row in record["results"]["variants"]]
    return (
        f"Measured {record['created_utc']} on {hardware['cpu']} ({hardware['cpu_count']} cores), "
        f"{hardware['accelerator']}; Keras {record['versions']['keras']} on {hardware['keras_backend']}; "
        f"wall time {record['wall_time_s']:.0f} s.\n\n"
        + markdown_table("The hybrid's head, 15 epochs of 800 + 100 stored feature maps, batch 32 "
                         f"(fastest of {record['settings']['rounds']} interleaved rounds)", rows)
        + f"\n\nHoisted head vs paper head with the same weights: largest output difference "
        f"{record['results']['hoisted_max_difference']:.1e}.\n"
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=5, help="epochs measured per run, scaled to 15 (default 5)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds; the faster is kept (default 2)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated subset of {','.join(VARIANTS)}")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "profile_head.json")
    parser.add_argument("--markdown", type=Path, help="also write the table as Markdown (for the book)")
    args = parser.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown or "paper" not in variants:
        parser.error(f"--variants must include 'paper' and name only {', '.join(VARIANTS)}; got {args.variants!r}")

    from cxr_utils import runtime

    def log(message):
        print(message, file=sys.stderr, flush=True)

    start = time.perf_counter()
    log("checking the hoisted head")
    hoisted_gap = check_hoisted_matches_lstm(log)
    log(f"profiling {len(variants)} head variants, {args.rounds} rounds of {args.epochs} epochs")
    rows = profile(args.epochs, args.rounds, variants, log)
    record = runtime.run_record(vars(args), time.perf_counter() - start,
                                results={"variants": rows, "hoisted_max_difference": hoisted_gap,
                                         "protocol": PROTOCOL})
    runtime.write_json(record, args.out)
    show_tables(render(record), args.out, args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
