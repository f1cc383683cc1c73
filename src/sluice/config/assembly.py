"""The whole config's model, assembled from the registered plugins.

Each plugin brings its config model; the sections ``sources``, ``sinks`` and ``dead_letters`` are
tagged unions of them on ``type``, on top of :class:`~sluice.config.models.PipelineConfigBase`.
The same model validates a file, gives the JSON Schema (``sluice schema``) and the reference
(:mod:`.reference`).
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Annotated, Any, Union

from pydantic import Field, create_model

from sluice.config.models import (
    ComponentConfig,
    ComponentId,
    PipelineConfigBase,
    SinkConfig,
    SourceConfig,
)

if TYPE_CHECKING:
    from sluice.registry import Registry

__all__ = ["DEAD_LETTERS_ID", "build_config_model"]

DEAD_LETTERS_ID = "dead_letters"
"""The component id of the dead-letter sink (reserved)."""


def _union(models: list[type[ComponentConfig]]) -> Any:
    if len(models) == 1:
        return models[0]
    return Annotated[Union[tuple(models)], Field(discriminator="type")]  # noqa: UP007


def build_config_model(registry: Registry) -> type[PipelineConfigBase]:
    """The model of a whole config for the plugins in ``registry``."""
    return _build_config_model(
        tuple(sorted((n, p.config_model) for n, p in registry.sources.items())),
        tuple(sorted((n, p.config_model) for n, p in registry.sinks.items())),
    )


@cache
def _build_config_model(
    sources: tuple[tuple[str, type[SourceConfig]], ...],
    sinks: tuple[tuple[str, type[SinkConfig]], ...],
) -> type[PipelineConfigBase]:
    source_union = _union([m for _, m in sources])
    sink_union = _union([m for _, m in sinks])
    model: type[PipelineConfigBase] = create_model(
        "SluiceConfig",
        __base__=PipelineConfigBase,
        __doc__="A sluice pipeline: sources, sinks and how the process runs.",
        sources=(
            dict[ComponentId, source_union],  # type: ignore[valid-type]
            Field(description="Components that read records, by id.", min_length=1),
        ),
        sinks=(
            dict[ComponentId, sink_union],  # type: ignore[valid-type]
            Field(description="Components that write records, by id.", min_length=1),
        ),
        dead_letters=(
            sink_union | None,
            Field(
                None,
                description=(
                    "Where records that can never be written go, with their reason. Any sink "
                    "type, without `inputs`; default: a file sink writing "
                    "`<data_dir>/dead_letters.jsonl`."
                ),
            ),
        ),
    )
    return model
