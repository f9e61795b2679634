#!/usr/bin/python3
"""Benchmark of equivar_bench's two C4 networks in PyTorch, in a fused and a branch form.

Both forms compute F(x)_g = h(g . x) for the four rotations g, the blocks
concatenated along channels in element order, as libequivar's eq_equivarify
does:

- branches: h runs four times, once on each transformed input;
- fused: one convolution (or one dense layer) per equivarified layer, whose
  weight stacks the four branch weights. On the blocks action, the weight of
  branch g is W with its input-channel blocks rolled by g. The first (pixel)
  layer uses the filters rotated by -g and then turns output block g by g.

The script checks that the two forms agree on a random input before it times
anything. Run it with Debian's interpreter, /usr/bin/python3, which has
python3-torch; without torch it prints that it skips and exits with status 0.
"""

import argparse
import gc
import json
import os
import statistics
import sys
import time

# OpenBLAS reads its thread count when the library loads, so this must come
# before the torch import; torch's own thread pool is set in main.
os.environ["OPENBLAS_NUM_THREADS"] = "1"
try:
    import torch
except ImportError:
    torch = None

GROUP_ORDER = 4  # C4
IMAGE_SIZE = 28
CLASSES = 10
BATCH_SIZES = (64, 200)
LEARNING_RATE = 0.001
SEED = 20240601

# The same layers as bench/equivar_bench.c: (input action, ops of h). An h on
# the blocks action takes all four blocks of the previous layer's output as
# its input, hence the 4 * C input sizes.
NETWORKS = {
    "small": [
        ("pixels", [("conv", 1, 8), ("relu",), ("maxpool", 2)]),
        ("blocks", [("conv", 4 * 8, 16), ("relu",), ("maxpool", 2)]),
        ("blocks", [("flatten",), ("dense", 4 * 16 * 7 * 7, CLASSES)]),
    ],
    "reference": [
        ("pixels", [("conv", 1, 80), ("relu",)]),
        ("blocks", [("conv", 4 * 80, 80), ("relu",)]),
        ("blocks", [("conv", 4 * 80, 32), ("relu",), ("maxpool", 4), ("flatten",),
                    ("dense", 32 * 7 * 7, 1024), ("relu",), ("dense", 1024, CLASSES)]),
    ],
}


MAX_ITERATIONS = 100  # the same cap as equivar_bench


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="2 timed iterations and a 10 s limit per measurement (a smoke run)")
    parser.add_argument("--threads", default="2",
                        help="comma-separated torch.set_num_threads values to run, e.g. 1,2 (default 2)")
    parser.add_argument("--json", metavar="FILE", help="also write every figure to FILE as JSON")
    parser.add_argument("--network", choices=("small", "reference", "all"), default="all",
                        help="run only one network (default: all)")
    parser.add_argument("--iterations", type=int,
                        help="timed iterations after one warm-up, at least (default 5, quick 2)")
    parser.add_argument("--min-seconds", type=float,
                        help="more timed iterations until they add up to this many seconds, up to "
                             f"{MAX_ITERATIONS} (default 1, quick 0.2)")
    parser.add_argument("--max-seconds", type=float,
                        help="time limit per measurement in seconds (default 60, quick 10); a measurement "
                             "whose batch-1 probe predicts more than half of it per iteration is skipped")
    args = parser.parse_args()
    if args.iterations is None:
        args.iterations = 2 if args.quick else 5
    if args.max_seconds is None:
        args.max_seconds = 10.0 if args.quick else 60.0
    if args.min_seconds is None:
        args.min_seconds = 0.2 if args.quick else 1.0
    try:
        args.threads = [int(count) for count in args.threads.split(",")]
    except ValueError:
        parser.error(f"--threads: invalid list '{args.threads}', expected integers such as 1,2")
    if min(args.threads) < 1 or args.iterations < 1 or args.max_seconds <= 0:
        parser.error("--threads, --iterations and --max-seconds must be positive")
    if args.min_seconds < 0:
        parser.error("--min-seconds must not be negative")
    return args


# --- Group actions -----------------------------------------------------------

def act(x, g, action):
    """Return g . x: x turned by g counter-clockwise quarter turns, or its blocks rolled so block j is x's block j + g."""
    if g == 0:
        return x
    if action == "pixels":
        # Same direction as numpy.rot90 and libequivar: out[i][j] = in[j][W-1-i].
        return torch.rot90(x, g, dims=(2, 3))
    block = x.shape[1] // GROUP_ORDER
    return torch.cat([x[:, g * block:], x[:, :g * block]], dim=1)


# --- The two forms -------------------------------------------------------------

def build_h(ops):
    nn = torch.nn
    layers = []
    for op in ops:
        if op[0] in ("conv", "dense"):
            layer = nn.Conv2d(op[1], op[2], 3, padding=1) if op[0] == "conv" else nn.Linear(op[1], op[2])
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")  # He, as eq_layer_init_he
            nn.init.zeros_(layer.bias)
            layers.append(layer)
        elif op[0] == "relu":
            layers.append(nn.ReLU())
        elif op[0] == "maxpool":
            layers.append(nn.MaxPool2d(op[1]))
        else:
            layers.append(nn.Flatten())
    return nn.Sequential(*layers).to(memory_format=torch.channels_last)


class BranchForm:
    """F(x)_g = h(g . x) with one call of h per group element, for every layer."""

    def __init__(self, layers):
        self.layers = layers  # [(action, h)]

    def __call__(self, x):
        for action, h in self.layers:
            x = torch.cat([h(act(x, g, action)) for g in range(GROUP_ORDER)], dim=1)
        return x

    def parameters(self):
        return [p for _, h in self.layers for p in h.parameters()]


class FusedForm:
    """The branch form with the branches of each layer's first conv or dense folded into one call.

    The fused weights are rebuilt from h's parameters on every call, so
    training updates the shared weights exactly as in the branch form.
    """

    def __init__(self, layers):
        self.layers = layers  # [(action, h)], the same modules as the branch form

    def __call__(self, x):
        for action, h in self.layers:
            x = self.lifting(h, x) if action == "pixels" else self.regular(h, x)
        return x

    def parameters(self):
        return [p for _, h in self.layers for p in h.parameters()]

    @staticmethod
    def lifting(h, x):
        # conv(W, r^g x) = r^g conv(r^-g W, x) for a 3x3 kernel with padding 1
        # on a square image, and ReLU and max-pooling with a window that tiles
        # the image commute with r^g, so block g is turned by g at the end.
        conv = h[0]
        weight = torch.cat([torch.rot90(conv.weight, -g, dims=(2, 3)) for g in range(GROUP_ORDER)])
        y = torch.nn.functional.conv2d(x, weight, conv.bias.repeat(GROUP_ORDER), padding=1)
        for layer in h[1:]:
            y = layer(y)
        block = y.shape[1] // GROUP_ORDER
        return torch.cat([torch.rot90(y[:, g * block:(g + 1) * block], g, dims=(2, 3))
                          for g in range(GROUP_ORDER)], dim=1)

    @staticmethod
    def regular(h, x):
        # Branch g gets block j + g at position j, so its weight must apply
        # W's block j - g there. That is W with its input blocks rolled by g.
        first = 0
        if isinstance(h[0], torch.nn.Flatten):
            x = x.reshape(x.shape[0], -1)
            first = 1
        layer = h[first]
        out_features = layer.weight.shape[0]
        blocks = layer.weight.reshape(out_features, GROUP_ORDER, -1)
        weight = torch.cat([torch.roll(blocks, g, dims=1) for g in range(GROUP_ORDER)])
        weight = weight.reshape((GROUP_ORDER * out_features,) + tuple(layer.weight.shape[1:]))
        bias = layer.bias.repeat(GROUP_ORDER)
        if isinstance(layer, torch.nn.Conv2d):
            y = torch.nn.functional.conv2d(x, weight.contiguous(memory_format=torch.channels_last), bias,
                                           padding=1)
        else:
            y = torch.nn.functional.linear(x, weight, bias)

        # Pointwise layers and pooling act on all branches at once; after
        # Flatten, dense layers act on (N, branch, features).
        for layer in h[first + 1:]:
            if isinstance(layer, torch.nn.Flatten):
                y = y.reshape(y.shape[0], GROUP_ORDER, -1)
            else:
                y = layer(y)
        return y.reshape(y.shape[0], -1) if y.dim() == 3 else y


def build(name, dtype=None):
    """Return (fused form, branch form), which share one set of parameters."""
    torch.manual_seed(SEED)
    layers = [(action, build_h(ops)) for action, ops in NETWORKS[name]]
    if dtype is not None:
        for _, h in layers:
            h.to(dtype)
    return FusedForm(layers), BranchForm(layers)


def random_batch(batch, dtype=None):
    generator = torch.Generator().manual_seed(SEED + batch)
    x = torch.rand(batch, 1, IMAGE_SIZE, IMAGE_SIZE, generator=generator, dtype=dtype)
    labels = torch.randint(0, GROUP_ORDER * CLASSES, (batch,), generator=generator)
    return x.contiguous(memory_format=torch.channels_last), labels


def max_relative_diff(a, b):
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def check_forms(name):
    """Compare the two forms on a random batch of 3: outputs in float32, outputs and gradients in float64.

    Gradients are compared in float64 because in float32 a rounding
    difference can flip a ReLU or pick another maximum in a pooling window
    and reroute part of the gradient, which is not a difference between the
    formulas.
    """
    checks = {}
    for dtype in (torch.float32, torch.float64):
        fused, branches = build(name, dtype)
        x, labels = random_batch(3, dtype)
        outputs, grads = [], []
        for model in (fused, branches):
            for p in model.parameters():
                p.grad = None
            out = model(x)
            torch.nn.functional.cross_entropy(out, labels).backward()
            outputs.append(out.detach())
            grads.append([p.grad.clone() for p in model.parameters()])
        checks[dtype] = (outputs, list(zip(grads[0], grads[1])))

    outputs32, _ = checks[torch.float32]
    outputs64, grads64 = checks[torch.float64]
    ok = (torch.allclose(outputs32[0], outputs32[1], rtol=1e-4, atol=1e-5)
          and torch.allclose(outputs64[0], outputs64[1], rtol=1e-10, atol=1e-12)
          and all(torch.allclose(f, b, rtol=1e-10, atol=1e-12 * float(b.abs().max())) for f, b in grads64))
    return {"float32_output_max_rel_diff": max_relative_diff(outputs32[0], outputs32[1]),
            "float64_output_max_rel_diff": max_relative_diff(outputs64[0], outputs64[1]),
            "float64_grad_max_rel_diff": max(max_relative_diff(f, b) for f, b in grads64),
            "ok": bool(ok)}


# --- Timing --------------------------------------------------------------------

def make_step(model, mode, batch):
    """Return a function that runs one iteration and returns its seconds."""
    x, labels = random_batch(batch)

    if mode == "infer":
        def infer_step():
            begin = time.perf_counter()
            with torch.inference_mode():
                model(x)
            return time.perf_counter() - begin
        return infer_step

    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE)

    def train_step():
        begin = time.perf_counter()
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), labels).backward()
        optimizer.step()
        return time.perf_counter() - begin
    return train_step


def measure(args, step, estimate):
    """Run one warm-up step, then up to args.iterations timed steps within the limit.

    A step estimated above half the limit is skipped, because a warm-up and
    one timed step would not fit.
    """
    result = {"skipped": estimate * 2 > args.max_seconds, "estimated_seconds": estimate,
              "iterations": 0, "median_seconds": None}
    if result["skipped"]:
        return result
    begin = time.perf_counter()
    step()
    samples = []
    # At least args.iterations samples, and more while they add up to less than
    # args.min_seconds, as in equivar_bench, so both medians resist the same noise.
    while len(samples) < MAX_ITERATIONS:
        samples.append(step())
        if time.perf_counter() - begin > args.max_seconds:
            break
        if len(samples) >= args.iterations and sum(samples) >= args.min_seconds:
            break
    result["iterations"] = len(samples)
    result["median_seconds"] = statistics.median(samples)
    return result


def peak_rss_mib():
    """Return VmHWM of this process in MiB, the peak since the last reset, or None off Linux."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def reset_peak_rss():
    """Reset VmHWM to the current resident size; return False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False


def run_network(args, name, threads, runs):
    torch.set_num_threads(threads)
    for form_index, form in enumerate(("fused", "branches")):
        for mode in ("train", "infer"):
            # The first call includes one-time set-up, so the second is the probe.
            probe = make_step(build(name)[form_index], mode, 1)
            probe()
            seconds_per_image = probe()
            for batch in BATCH_SIZES:
                gc.collect()
                reset = reset_peak_rss()
                step = make_step(build(name)[form_index], mode, batch)
                record = {"network": name, "form": form, "mode": mode, "batch": batch, "threads": threads}
                record.update(measure(args, step, seconds_per_image * batch))
                record["images_per_second"] = None if record["skipped"] else batch / record["median_seconds"]
                record["peak_rss_mib"] = peak_rss_mib() if reset else None
                del step
                runs.append(record)
                print_run(record)


def load_average():
    """Return the 1-minute load average, which shows how busy the shared machine was."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def print_run(record):
    head = (f"{record['network']:<10}  {record['form']:<8}  {record['mode']:<5}  {record['batch']:5d}  "
            f"{record['threads']:7d}")
    if record["skipped"]:
        print(f"{head}  skipped: estimated {record['estimated_seconds']:.1f} s per iteration", flush=True)
        return
    rss = record["peak_rss_mib"] if record["peak_rss_mib"] is not None else float("nan")
    print(f"{head}  {record['images_per_second']:9.2f}  {record['median_seconds'] * 1e3:9.1f}  {rss:9.0f}  "
          f"{record['iterations']:5d}", flush=True)


def write_json(path, document):
    with open(path, "w", encoding="utf-8") as out:
        json.dump(document, out, indent=2)
        out.write("\n")


def main():
    args = parse_args()
    if torch is None:
        reason = f"PyTorch is not installed for {sys.executable}"
        print(f"torch_bench: {reason}; skipping (Debian: apt-get install python3-torch)")
        if args.json:
            write_json(args.json, {"program": "torch_bench", "skipped": reason, "runs": []})
        return 0

    names = list(NETWORKS) if args.network == "all" else [args.network]
    document = {"program": "torch_bench", "skipped": None, "torch_version": torch.__version__,
                "threads": args.threads, "quick": args.quick, "iterations": args.iterations,
                "min_seconds": args.min_seconds,
                "max_seconds": args.max_seconds, "load_average_start": load_average(), "checks": {},
                "runs": []}

    print(f"PyTorch {torch.__version__}, threads {args.threads}, channels-last, "
          f"OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']}, "
          f"1-minute load average {document['load_average_start']:.2f}")
    for name in names:
        check = check_forms(name)
        document["checks"][name] = check
        print(f"{name}: fused vs branches, max relative difference: float32 output "
              f"{check['float32_output_max_rel_diff']:.1e}, float64 output {check['float64_output_max_rel_diff']:.1e}, "
              f"float64 gradients {check['float64_grad_max_rel_diff']:.1e}")
        if not check["ok"]:
            print(f"torch_bench: the fused form of the {name} network differs from the branch form; "
                  "nothing was timed", file=sys.stderr)
            return 1

    print("\nImages/s, medians (training: forward, loss, backward, SGD step)")
    print("network     form      mode   batch  threads   images/s    ms/iter   peak MiB  iters")
    for name in names:
        for threads in args.threads:
            run_network(args, name, threads, document["runs"])
    document["load_average_end"] = load_average()
    print(f"\n1-minute load average at the end: {document['load_average_end']:.2f}")
    document["max_rss_mib"] = max((r["peak_rss_mib"] for r in document["runs"] if r["peak_rss_mib"]), default=None)
    if args.json:
        write_json(args.json, document)
    return 0


if __name__ == "__main__":
    sys.exit(main())
