"""Input data: image files, the PIL-exact degradation, sources and grain pipelines."""

from neurop_jax.data.config import default_data_config
from neurop_jax.data.degrade import downsample, eval_pair, eval_sizes, lr_size
from neurop_jax.io.images import decode_image, list_images, read_image, write_image
from neurop_jax.data.pipelines import (diffusion_dataset, diffusion_pipeline, eval_batches,
                                       operator_dataset, operator_pipeline)
from neurop_jax.data.sources import (ImageFolderSource, TfdsSource, build_sources,
                                     sample_data_path)
from neurop_jax.data.splits import fraction_split, folder_split, read_split, write_split

__all__ = [
    "ImageFolderSource", "TfdsSource", "build_sources", "decode_image", "default_data_config",
    "diffusion_dataset", "diffusion_pipeline", "downsample", "eval_batches", "eval_pair",
    "eval_sizes", "folder_split", "fraction_split", "list_images", "lr_size", "operator_dataset",
    "operator_pipeline", "read_image", "read_split", "sample_data_path", "write_image",
    "write_split",
]
