"""Input data: image files, the PIL-exact degradation, sources and grain pipelines (names load on
first use)."""

from neurop_jax._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "default_data_config": "neurop_jax.data.config",
    "downsample": "neurop_jax.data.degrade",
    "eval_pair": "neurop_jax.data.degrade",
    "eval_sizes": "neurop_jax.data.degrade",
    "lr_size": "neurop_jax.data.degrade",
    "decode_image": "neurop_jax.io.images",
    "list_images": "neurop_jax.io.images",
    "read_image": "neurop_jax.io.images",
    "write_image": "neurop_jax.io.images",
    "diffusion_dataset": "neurop_jax.data.pipelines",
    "diffusion_pipeline": "neurop_jax.data.pipelines",
    "eval_batches": "neurop_jax.data.pipelines",
    "operator_dataset": "neurop_jax.data.pipelines",
    "operator_pipeline": "neurop_jax.data.pipelines",
    "ImageFolderSource": "neurop_jax.data.sources",
    "TfdsSource": "neurop_jax.data.sources",
    "build_sources": "neurop_jax.data.sources",
    "sample_data_path": "neurop_jax.data.sources",
    "fraction_split": "neurop_jax.data.splits",
    "folder_split": "neurop_jax.data.splits",
    "read_split": "neurop_jax.data.splits",
    "write_split": "neurop_jax.data.splits",
})
