"""Recipes: the schema (schema.py), loading them from YAML with overrides (loading.py), safe
YAML (safe_yaml.py), variant run names (variants.py), the shipped recipes (catalog.py) and the
generated reference docs/recipes.md (recipe_doc.py).

``from tmkt_cli.config import Recipe, load_recipe`` is the way in; the names below are the
package's public surface.
"""

from tmkt_cli.config.loading import (
    KEY_NAME,
    all_keys,
    apply_overrides,
    build,
    check_path_lengths,
    config_hash,
    deep_merge,
    default_name,
    describe_text,
    describe_type,
    dump_yaml,
    field_docs,
    is_key_name,
    iter_fields,
    load_raw_recipe,
    load_recipe,
    parse_override,
    read_yaml,
    require_path,
    schema_default,
    stage_config,
    to_dict,
)
from tmkt_cli.config.schema import (
    STAGE_IGNORED_KEYS,
    STAGE_SECTIONS,
    THREADS_DEFAULT,
    CamConfig,
    DataConfig,
    DistillConfig,
    EmulatorConfig,
    EvalConfig,
    MethodConfig,
    ModelConfig,
    PathsConfig,
    PrepareConfig,
    PretrainAnnConfig,
    Recipe,
    TrainConfig,
    eval_folder_name,
    param,
)
from tmkt_cli.methods.registry import resolve as resolve_method
from tmkt_cli.methods.registry import trains_both_heads

__all__ = [
    "KEY_NAME", "STAGE_IGNORED_KEYS", "STAGE_SECTIONS", "THREADS_DEFAULT",
    "CamConfig", "DataConfig", "DistillConfig", "EmulatorConfig", "EvalConfig", "MethodConfig",
    "ModelConfig", "PathsConfig", "PrepareConfig", "PretrainAnnConfig", "Recipe", "TrainConfig",
    "all_keys", "apply_overrides", "build", "check_path_lengths", "config_hash", "deep_merge",
    "default_name", "describe_text", "describe_type", "dump_yaml", "eval_folder_name",
    "field_docs", "is_key_name", "iter_fields", "load_raw_recipe", "load_recipe", "param",
    "parse_override", "read_yaml", "require_path", "resolve_method", "schema_default",
    "stage_config", "to_dict", "trains_both_heads",
]
