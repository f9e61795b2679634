#!/bin/bash
# Builds libequivar in Release, runs equivar_bench and torch_bench.py, and prints one side-by-side table.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: bench/compare.sh [--install] [--quick] [--threads N] [--network NAME] [--max-seconds S]
                        [--build-dir DIR] [--out DIR] [--table-only]
  --install        first run apt-get install -y python3-torch libopenblas0-pthread (needs root)
  --quick          pass --quick to both benchmarks: a smoke run of a few minutes
  --threads N      thread count of the multi-threaded runs (default: online CPUs)
  --network NAME   small, reference or all (default all)
  --max-seconds S  time limit per measurement in seconds, passed to both benchmarks
  --build-dir DIR  CMake build directory (default: build-bench in the repository)
  --out DIR        directory for the JSON files and logs (default: <build-dir>/results)
  --table-only     print the tables from the files already in the --out directory,
                   without building or running anything
The tables go to stdout, the output of the two benchmarks to stderr.
EOF
}

root=$(cd "$(dirname "$0")/.." && pwd)
install=0
table_only=0
quick=""
threads=$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)
network=all
max_seconds=""
build_dir="$root/build-bench"
out_dir=""

while [ $# -gt 0 ]; do
    case "$1" in
        --install) install=1 ;;
        --table-only) table_only=1 ;;
        --quick) quick="--quick" ;;
        --threads|--network|--max-seconds|--build-dir|--out)
            if [ $# -lt 2 ]; then
                echo "compare.sh: missing value for $1" >&2
                usage >&2
                exit 2
            fi
            case "$1" in
                --threads) threads=$2 ;;
                --network) network=$2 ;;
                --max-seconds) max_seconds=$2 ;;
                --build-dir) build_dir=$2 ;;
                --out) out_dir=$2 ;;
            esac
            shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "compare.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done
[ -n "$out_dir" ] || out_dir="$build_dir/results"

# Debian's interpreter, because a python3 earlier on PATH may lack torch.
torch_python=/usr/bin/python3

run_benchmarks() {
    if [ "$install" = 1 ]; then
        apt-get install -y python3-torch libopenblas0-pthread
    fi

    # Tests and examples are not needed here, and skipping them avoids the cmocka dependency.
    cmake -S "$root" -B "$build_dir" -DCMAKE_BUILD_TYPE=Release -DEQ_BUILD_TESTS=OFF -DEQ_BUILD_EXAMPLES=OFF \
        >/dev/null
    cmake --build "$build_dir" -j2 --target equivar_bench >/dev/null
    mkdir -p "$out_dir"
    rm -f "$out_dir/equivar.json" "$out_dir/torch.json" "$out_dir/commit.txt"

    local commit
    commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
    if [ -n "$(git -C "$root" status --porcelain --untracked-files=no 2>/dev/null)" ]; then
        commit="$commit with uncommitted changes"
    fi
    echo "$commit" >"$out_dir/commit.txt"

    local extra=""
    [ -z "$max_seconds" ] || extra="--max-seconds $max_seconds"

    echo "== libequivar ($build_dir/bench/equivar_bench) ==" >&2
    # shellcheck disable=SC2086 # $quick and $extra are option lists or empty
    "$build_dir/bench/equivar_bench" $quick $extra --threads "$threads" --network "$network" \
        --json "$out_dir/equivar.json" | tee "$out_dir/equivar.txt" >&2

    local torch_threads=1
    [ "$threads" = 1 ] || torch_threads="1,$threads"
    echo "== PyTorch ($torch_python bench/torch_bench.py) ==" >&2
    if [ -x "$torch_python" ]; then
        # shellcheck disable=SC2086
        "$torch_python" "$root/bench/torch_bench.py" $quick $extra --threads "$torch_threads" \
            --network "$network" --json "$out_dir/torch.json" | tee "$out_dir/torch.txt" >&2
    else
        echo "compare.sh: $torch_python not found; the PyTorch columns stay empty" >&2
        echo '{"program": "torch_bench", "skipped": "no /usr/bin/python3", "runs": []}' >"$out_dir/torch.json"
    fi
}

if [ "$table_only" = 1 ]; then
    for file in "$out_dir/equivar.json" "$out_dir/torch.json"; do
        if [ ! -f "$file" ]; then
            echo "compare.sh: $file not found; run compare.sh without --table-only first" >&2
            exit 1
        fi
    done
else
    run_benchmarks
fi

join_python=$torch_python
[ -x "$join_python" ] || join_python=python3
commit=$(cat "$out_dir/commit.txt" 2>/dev/null || echo unknown)
"$join_python" - "$out_dir/equivar.json" "$out_dir/torch.json" "$commit" <<'EOF'
"""Joins the two JSON files into Markdown tables of images/s and peak memory."""
import json
import sys

with open(sys.argv[1], encoding="utf-8") as f:
    lib = json.load(f)
with open(sys.argv[2], encoding="utf-8") as f:
    tor = json.load(f)
commit = sys.argv[3]


def find(runs, **keys):
    for run in runs:
        if all(run.get(k) == v for k, v in keys.items()):
            return run
    return None


def cell(run):
    if run is None:
        return "n/a"
    if run["skipped"]:
        return f"skipped (est. {run['batch'] / run['estimated_seconds']:.3g})"
    return f"{run['images_per_second']:.1f}"


def ratio(a, b):
    if a is None or b is None or a["skipped"] or b["skipped"]:
        return "n/a"
    return f"{a['images_per_second'] / b['images_per_second']:.2f}"


def memory(run):
    if run is None or run["skipped"] or run.get("peak_rss_mib") is None:
        return "n/a"
    return f"{run['peak_rss_mib']:.0f}"


def configurations():
    for name in [n["name"] for n in lib["networks"]]:
        for mode in ("train", "infer"):
            for batch in (64, 200):
                yield name, mode, batch


def runs_for(threads, name, mode, batch):
    ours = find(lib["runs"], network=name, mode=mode, batch=batch, threads=threads)
    fused = find(tor["runs"], network=name, form="fused", mode=mode, batch=batch, threads=threads)
    branches = find(tor["runs"], network=name, form="branches", mode=mode, batch=batch, threads=threads)
    return ours, fused, branches


peak = lib["peak"]
print(f"libequivar commit {commit}; equivar_bench quick={lib['quick']}")
print(f"FP32 FMA peak ({peak['isa']}): {peak['gflops_1_thread']:.0f} GFLOP/s on 1 thread", end="")
if lib["threads"] > 1:
    print(f", {peak['gflops_all_threads']:.0f} GFLOP/s on {lib['threads']} threads", end="")
print()
print(f"1-minute load average: libequivar run {lib['load_average_start']:.2f} -> {lib['load_average_end']:.2f}", end="")
if tor.get("skipped"):
    print(f"; PyTorch skipped: {tor['skipped']}")
else:
    print(f", PyTorch {tor['torch_version']} run {tor['load_average_start']:.2f} -> {tor['load_average_end']:.2f}")
print("Figures are images/s, medians of the timed iterations; a ratio above 1 means libequivar is faster.")
print("'skipped (est. x)': the batch-1 probe predicted more than half the time limit per iteration; "
      "x is the images/s it predicts.")
# Runs before the thread pool landed have "thread_pool": false.
if not lib.get("thread_pool", True):
    print(f"This libequivar has no thread pool, so it ran on 1 thread only: n/a in the {lib['threads']}-thread table.")

thread_counts = sorted({1, lib["threads"]})
for threads in thread_counts:
    print(f"\nImages/s, {threads} thread{'s' if threads > 1 else ''}\n")
    print("| network | mode | batch | libequivar | PyTorch fused | PyTorch branches "
          "| libequivar / fused | libequivar / branches |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, mode, batch in configurations():
        ours, fused, branches = runs_for(threads, name, mode, batch)
        print(f"| {name} | {mode} | {batch} | {cell(ours)} | {cell(fused)} | {cell(branches)} "
              f"| {ratio(ours, fused)} | {ratio(ours, branches)} |")

print("\nPeak resident memory in MiB, 1 thread (PyTorch's includes the interpreter and the memory its "
      "allocator kept from earlier runs)\n")
print("| network | mode | batch | libequivar | PyTorch fused | PyTorch branches |")
print("| --- | --- | ---: | ---: | ---: | ---: |")
for name, mode, batch in configurations():
    ours, fused, branches = runs_for(1, name, mode, batch)
    print(f"| {name} | {mode} | {batch} | {memory(ours)} | {memory(fused)} | {memory(branches)} |")
EOF
