"""CIFAR-100 on frozen features: linear probe and kNN (PROTOCOLS.md "Chosen protocols", CIFAR-100).

- Features: the backbone's global-average-pooled last stage (2048-d for 4x-bottleneck ResNets), the whole image
  upsampled 32 -> 224 px (bilinear, on the device; fine-tuning's test transform instead takes the central 87.5%),
  no augmentation, the weight source's input normalisation.
- Linear probe (Kornblith, Shlens & Le 2019): multinomial logistic regression with L-BFGS (scikit-learn), L2
  penalty lam chosen on a held-out 20% of the training set from 45 log-spaced values between 1e5 and 1e-6 (their
  grid; listed strongest first, so ties go to the stronger penalty), then refit on all 50,000 training images and
  scored on the test set. scikit-learn's C = 1 / (lam * n_train) (tasks/classification.py ``l2_to_C``).
- kNN: k = 20 nearest training images by cosine similarity, votes weighted by exp(sim / 0.07) (Wu et al. 2018;
  DINO's k=20 setting).

``--preset mini``: 16 px, 4 penalties, 300 L-BFGS iterations, k = 5.
"""
from rs_transfer.backbones import ResNetRS

resolution = 224

model = dict(
    # num_classes=0: the ResNetRS forward returns pooled features (no classifier).
    backbone=dict(type=ResNetRS, num_classes=0),
)

feature_loader = dict(batch_size=256, num_workers=4, dataset=dict(data_root=""))

probe = dict(
    holdout=0.2,
    # 45 values, 10^5 ... 10^-6 (= numpy.logspace(5, -6, 45)).
    l2_grid=[10 ** (5 - 11 * i / 44) for i in range(45)],
    max_iter=1000,
    knn_k=20,
    knn_temperature=0.07,
)
