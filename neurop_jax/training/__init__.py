"""Training of both stages: ``loop`` (``train_and_evaluate``), ``steps`` (the pure, compiled steps),
``state`` (train state and optimizer), ``validation``, ``records`` (metrics, TensorBoard, sample
grids) and ``config`` (every field, with the paper's defaults)."""
