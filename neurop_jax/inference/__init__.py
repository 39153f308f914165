"""Super-resolution of images with a trained run: ``run`` (``load_run``, the ``Run`` every entry point
takes), ``api`` (the jitted untiled calls), ``tiled`` (any size in bounded memory) and ``tiles``
(their geometry and noise field)."""
