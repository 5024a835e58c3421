#!/bin/sh
# The best features recipe from nothing (README: "Beyond pixels"), timed step by step:
#
#     benchmarks/best_features.sh DATA_DIR OUT_DIR
#
# DATA_DIR holds cifar-10-batches-py (or is it); OUT_DIR gets the feature map, the two runs, its
# own feature cache (OUT_DIR/cache: nothing extracted earlier is reused) and the final model,
# OUT_DIR/model.h5. Needs cifarlin on PATH and /usr/bin/time for the peak memory of each step.
set -eu
if [ $# -ne 2 ]; then
    echo "usage: $0 DATA_DIR OUT_DIR" >&2
    exit 2
fi
DATA=$1
OUT=$2
mkdir -p "$OUT"
export XDG_CACHE_HOME="$OUT/cache"
SPLIT="--train-batches 1-5 --val-size 1000 --data-dir $DATA"
step() {
    name=$1
    shift
    echo "== $name: $*" >&2
    if [ -x /usr/bin/time ]; then
        /usr/bin/time -f "== $name: %e s, peak %M kB" "$@"
    else
        "$@"
    fi
}
start=$(date +%s)
step fit cifarlin features fit --centroids 4000 --encoder split --alpha 0.25 --mirror $SPLIT \
    --out "$OUT/split4000.h5" --overwrite
step ridge cifarlin train --features "$OUT/split4000.h5" --solver ridge $SPLIT \
    -o "$OUT/ridge" --overwrite --no-plots
step l2svm cifarlin train --features "$OUT/split4000.h5" --init "$OUT/ridge" --loss l2svm --lam 1e-6 \
    --eta 0.0003 --schedule cosine --epochs 20 --shuffle --keep best $SPLIT -o "$OUT/l2svm" --overwrite
cp "$OUT/l2svm/model.h5" "$OUT/model.h5.tmp"
mv "$OUT/model.h5.tmp" "$OUT/model.h5"
echo "== from nothing: $(( $(date +%s) - start )) s; the model: $OUT/model.h5" >&2
cifarlin evaluate "$OUT/model.h5" --data-dir "$DATA"
