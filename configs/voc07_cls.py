"""PASCAL VOC 2007 classification (trainval / test, multi-label); metric 11-point mAP (VOC2007). Kornblith, Shlens & Le
2019's transfer protocols (tasks/voc07_cls.py reads the data through torchvision; shared code: tasks/_tvclass.py,
tasks/_frozen.py).

- ``linear``: pooled penultimate features of the eval crop: shorter side to ``resolution / 0.875``, the centre
  ``resolution`` x ``resolution`` (``resolution = None``: the backbone's published resolution, from the model
  registry), the weight source's normalisation, no augmentation. Logistic regression (one binary regression per
  class: multi-label) with L-BFGS (scikit-learn), L2 penalty chosen on a held-out 20 % of the training set from 45
  log-spaced values 1e5 ... 1e-6 (strongest first; ties go to the stronger), then refit on all training images (the
  CIFAR-100 probe's code, tasks/classification.py ``linear_probe``). Features are cached (tasks/_frozen.py).
- ``fewshot``: ``probe.shots`` images positive for each class, class-balanced seeded draws, ``probe.episodes``
  draws, mean and 95 % t-interval; the penalty is chosen on max(1, round(0.2 k)) held-out images per class of the
  draw and refit on all k; k = 1 uses ``probe.one_shot_l2``. ``"vtab1k"``: 1000 random training images, 800 fit /
  200 select, refit on all 1000.

``--preset mini``: 16 px, 4 penalties, 300 L-BFGS iterations, no workers.
"""
from rs_transfer.backbones import ResNetRS
from rs_transfer.tasks._tvclass import TvClassDataset

resolution = None            # frozen features: None = the backbone's published resolution (model registry)

feature_loader = dict(batch_size=256, num_workers=4,
                      dataset=dict(type=TvClassDataset, task="voc07-cls", data_root="", crop_fraction=0.875))

probe = dict(
    holdout=0.2,
    l2_grid=[10 ** (5 - 11 * i / 44) for i in range(45)],   # numpy.logspace(5, -6, 45)
    max_iter=1000,
    draw="class-balanced-v1",
    shots=[1, 2, 5, 10, 25],
    episodes=5,
    one_shot_l2=1e-2,
    vtab_train=800,
    vtab_val=200,
)

model = dict(backbone=dict(type=ResNetRS, num_classes=0))
