"""Evaluation: FID / IS / precision-recall through torch-fidelity, and the offline shapes judge.

    metrics.py      Fréchet distance, Inception features, the shapes metric
    shapes_judge.py the small CNN that judges samples of the built-in shapes
    video_metrics.py  offline metrics for clips of the moving shapes (class, coherent motion, prediction)
    centroids.py    the centroid tracker and the straight-line fit of a track (clips)
    motion.py       the motion judge: which way the moving shape goes (or none)
    scoring.py      per-sample scorers (the shapes judge, Inception) and bootstrap intervals: the benchmarks
    fvd.py          Fréchet Video Distance: I3D and StyleGAN-V's protocol, from local weights
"""
