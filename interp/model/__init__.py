"""The only place that knows where weights come from and how a model is wrapped for head analysis.

loading.py   load_model (names, local directories, GGUF files, hub ids) and wrap_model
adopt.py     as_loaded_model: a TransformerBridge or HF model the user built, wrapped once
loaded.py    LoadedModel and token batches
registry.py  named models (register_model refuses duplicates), the cache directory
bridge.py    every TransformerLens / transformers workaround, one reason each
tiny.py      tiny random models and the byte tokenizer;  images.py  images for vision-language models
zoo/         the bundled models, each registering itself
"""

from interp.core.registry import set_model_adapter
from interp.model import zoo  # noqa: F401  (registers the bundled models)
from interp.model.adopt import as_loaded_model
from interp.model.loaded import ImageBatch, LoadedModel, TokenBatch
from interp.model.loading import load_model, model_directory, wrap_model
from interp.model.registry import DEFAULT_MODEL, ModelEntry, get_entry, list_models, register_model

# run_metric and every registered analyzer (in interp.core, below this layer) adapt model objects with it.
set_model_adapter(as_loaded_model)

__all__ = [
    "DEFAULT_MODEL",
    "ImageBatch",
    "LoadedModel",
    "ModelEntry",
    "TokenBatch",
    "as_loaded_model",
    "get_entry",
    "list_models",
    "load_model",
    "model_directory",
    "register_model",
    "wrap_model",
]
