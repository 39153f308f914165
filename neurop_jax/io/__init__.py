"""Files in and out: images (Pillow), rasters (rasterio), value mappings, nodata, and the upsampling
of files that ``python -m neurop_jax.upsample`` runs."""
