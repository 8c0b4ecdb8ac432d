"""The only place that knows where weights come from and how a model is wrapped for head analysis.

loading.py   load_model (names, local directories, GGUF files) and wrap_model
loaded.py    LoadedModel and token batches
registry.py  named models (register_model refuses duplicates), the cache directory
bridge.py    every TransformerLens / transformers workaround, one reason each
tiny.py      tiny random models and the byte tokenizer;  images.py  images for vision-language models
zoo/         the bundled models, each registering itself
"""

from interp.model import zoo  # noqa: F401  (registers the bundled models)
from interp.model.loaded import ImageBatch, LoadedModel, TokenBatch
from interp.model.loading import load_model, model_directory, wrap_model
from interp.model.registry import DEFAULT_MODEL, ModelEntry, get_entry, list_models, register_model

__all__ = [
    "DEFAULT_MODEL",
    "ImageBatch",
    "LoadedModel",
    "ModelEntry",
    "TokenBatch",
    "get_entry",
    "list_models",
    "load_model",
    "model_directory",
    "register_model",
    "wrap_model",
]
