#!/usr/bin/env bash
# Rebuild the starter pipeline that ships in textless/assets/starter (tokenizer + unit LM + vocoder), on 2 CPU cores.
# Every stage is a textless command; the numbers in textless/assets/starter/README.md come from this script.
#   bash experiments/starter/build.sh            # ~2 h 45 min on 2 idle cores (the vocoder is most of it)
set -euo pipefail
cd "$(dirname "$0")/../.."
T=.venv/bin/textless
OUT=${OUT:-outputs/starter}

# 0. the bundled corpus (free voices, recording-like levels and silence): experiments/data/make_corpus.py
# 1. tokenizer: offline Whisper-base layer 4 -> k-means 100 on the training split (deduplicated units, 50 Hz)
$T kmeans --config kmeans/whisper_base_l4_k100 output=$OUT/tokenizer overwrite=true progress=false
for split in train valid valid_unseen; do
  $T tokenize tokenizer=$OUT/tokenizer dataset=bundled:$split output=$OUT/units/$split overwrite=true progress=false
done

# 2. unit LM: preset "starter" (OPT, 4 layers, d 256, 3.7M parameters) from scratch; 70 steps x 2048 tokens
#    (the validation loss is lowest there: the training split has only 20k units and the model overfits after)
$T train train_dataset=$OUT/units/train valid_dataset=$OUT/units/valid preset=starter output_dir=$OUT/lm \
  context_length=256 batch_size=8 lr=1e-3 min_lr=5e-5 warmup_fraction=0.05 max_steps=70 eval_every=10 \
  save_every=70 log_every=70 progress=false

# 3. vocoder: small unit HiFi-GAN (128 channels, upsampling [8, 5, 4, 2]), duration predictor, one embedding per
#    training voice; mel + duration losses only (a GAN step costs ~40x a mel step on a CPU); 10,000 steps (the
#    validation mel L1 is flat from ~8,000: 0.529, 0.522, 0.528 at 6,000, 8,000, 10,000), ~2 h 30 min on 2 idle cores
#    dc_weight: the mel loss is blind to a constant offset; without it the generator's "silence" sits at about -54 dBFS
$T train-vocoder --config vocoder_small train_dataset=$OUT/units/train valid_dataset=$OUT/units/valid \
  output_dir=$OUT/vocoder 'generator.upsample_rates=[8,5,4,2]' 'generator.upsample_kernel_sizes=[16,11,8,4]' \
  segment_frames=28 batch_size=16 lr=4e-4 decay_every=500 mel_only_steps=10000 max_steps=10000 dc_weight=1000 \
  max_seconds=null eval_every=2000 save_every=2000 log_every=200 progress=false

# 4. assemble (the parts are checked against each other) and copy into the package
.venv/bin/python - "$OUT" <<'PY'
import sys
from pathlib import Path
from textless.lm.model import UnitLM
from textless.pipeline import SpeechPipeline
from textless.tokenizers import SpeechTokenizer
from textless.vocoders import UnitVocoder
out = Path(sys.argv[1])
pipeline = SpeechPipeline(SpeechTokenizer.from_pretrained(out / "tokenizer"), UnitLM.from_pretrained(out / "lm/final"),
                          UnitVocoder.from_pretrained(out / "vocoder/final"), default_speaker="awb",
                          notes="trained on 11 minutes of TTS speech (7 free voices) on 2 CPU cores: see README.md")
pipeline.save_pretrained(out / "pipeline", overwrite=True)
PY
rm -rf textless/assets/starter.new && cp -r $OUT/pipeline textless/assets/starter.new
cp -r $OUT/units textless/assets/starter.new/units   # bundled:<split> as a unit dataset (textless.data.corpus)
cp textless/assets/starter/README.md textless/assets/starter.new/ 2>/dev/null || true
rm -rf textless/assets/starter && mv textless/assets/starter.new textless/assets/starter
echo "starter pipeline: $(du -sh textless/assets/starter | cut -f1)"
