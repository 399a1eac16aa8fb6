"""`retinanet benchmark`: this library against torchvision's ``retinanet_resnet50_fpn``.

Both models hold the same weights (random, made to produce many detections, as in
tests/weights/test_torchvision_parity.py) and see the same inputs in the same process. Within each
repeat the cases of a benchmark run one after the other, in alternating order from repeat to
repeat, so that load from other processes and clock changes hit both alike; warm-up runs are
excluded and medians reported, as ratios ours / torchvision. Sections (``--only``):

- ``ablation``: each inference optimization of retinanet.deploy.optimize, before and after (one size,
  batch 1), with the change in detections; it also picks the fast inference mode.
- ``inference``: R50-FPN latency per size and batch size, fp32 and the fast mode, with the
  change in detections against torchvision (matched at IoU > 0.9 with the same label, score
  difference).
- ``train``: one SGD training step (forward, backward, step), fp32 and low precision (autocast),
  with peak memory (CPU: peak RSS of a separate process per variant; CUDA: peak allocation).
- ``focal``: the focal loss, forward + backward, on 200,000 x 80 logits.
- ``assign``: anchor assignment + losses (+ backward) for 8 images of 20 boxes.
- ``postprocess``: top-k, decoding and NMS for 8 images.
- ``breakdown``: what bounds the ratios: the share of time in convolutions (torch.profiler),
  the convolution FLOPs, and this machine's convolution throughput per dtype and layout.
- ``ap``: COCO AP on the synthetic val split, fp32 against the fast mode (needs trained weights,
  e.g. from ``retinanet demo``).

Results go to OUT/results.json and OUT/results.md (self-contained: machine, command, tables,
bounds), and the summary table is printed.

Modules: ``cli`` (command line, the run, --update), ``context`` (what the sections share),
``timing`` (cases, alternating measurement, summary rows, the machine), ``models`` (models,
inputs, inference call, training step), ``agreement`` (detection matching), ``flops``
(convolution FLOPs and throughput), ``profiling``; the sections: ``inference`` (ablation,
inference), ``training`` and ``memory`` (train), ``components`` (focal, assign, postprocess),
``breakdown``, ``ap``; ``report`` (results.md).
"""

from .agreement import match_detections
from .cli import main
from .models import random_images, torchvision_model

__all__ = ["main", "match_detections", "random_images", "torchvision_model"]
