"""Recipes: plain YAML turned into typed, validated objects.

The whole recipe is validated before any work starts, so a typo costs a second, not an hour of
training. Every error names the file and the dotted key path. Relative paths resolve against the
recipe's folder. `--set key=value` overrides are parsed as YAML and merged before validation.

One module per recipe section (data.py with the tokenizer, model.py, train.py, decode.py), the
whole recipe in recipe.py, its building blocks (strict numbers, upper bounds) in types.py;
loading.py reads, overrides, validates and words the errors; memory.py estimates what training
needs; safe_yaml.py reads YAML within size, depth and alias-expansion bounds.
"""

from .data import Corpus, DataConfig, TokenizerConfig
from .decode import DecodeConfig
from .loading import dump_yaml, load_recipe, read_saved_recipe, recipe_from_plain
from .memory import MemoryEstimate, machine_memory, memory_estimate, parameter_count
from .model import ModelSection
from .recipe import Recipe
from .train import EarlyStop, StopAt, TrainConfig
from .types import (MAX_BATCH_TOKENS, MAX_FF, MAX_HEADS, MAX_LAYERS, MAX_LEN, MAX_STEPS, MAX_VOCAB, MAX_WIDTH, Bool,
                    Float, Int, Section)

__all__ = ["Bool", "Corpus", "DataConfig", "DecodeConfig", "EarlyStop", "Float", "Int", "MAX_BATCH_TOKENS", "MAX_FF",
           "MAX_HEADS", "MAX_LAYERS", "MAX_LEN", "MAX_STEPS", "MAX_VOCAB", "MAX_WIDTH", "MemoryEstimate",
           "ModelSection", "Recipe", "Section", "StopAt", "TokenizerConfig", "TrainConfig", "dump_yaml",
           "load_recipe", "machine_memory", "memory_estimate", "parameter_count", "read_saved_recipe",
           "recipe_from_plain"]
