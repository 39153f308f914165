"""Files in and out: images (Pillow), rasters (rasterio), value mappings, nodata, atomic writes
and the Orbax checkpoints of a workdir."""
