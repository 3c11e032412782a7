"""Evaluation: FID / IS / precision-recall through torch-fidelity, and the offline shapes judge.

    metrics.py      Fréchet distance, Inception features, the shapes metric
    classifier.py   the small CNN that judges samples of the built-in shapes
"""
