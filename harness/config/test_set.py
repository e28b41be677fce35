"""[cv] test: the locked test set's table in the study file (see harness.data.protocols for what
it selects)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

from pydantic import AfterValidator, Field, StrictStr, ValidationInfo, model_validator
from pydantic.dataclasses import dataclass

from harness.config.checks import TABLE, Number, one_of
from harness.config.messages import problem

#: How a locked test set is scored: one model refit on every non-test row, or the K fold models averaged.
TEST_MODELS = ("refit", "folds")


def _test_list(value: Any, info: ValidationInfo) -> Any:
    """A list file's path, relative to the study's folder (the context's ``base_dir``), which must exist."""
    base_dir = (info.context or {}).get("base_dir")
    if value is None or base_dir is None:
        return value
    file = Path(value).expanduser()
    file = file if file.is_absolute() else Path(base_dir) / file
    if not file.is_file():
        raise problem(f"list file {file} not found; give a file of paths, one a line, relative to the study file.")
    return str(file.resolve())


@dataclass(config=TABLE | {"populate_by_name": True})  # TestSet(list=...) as in the file, or file=... in code
class TestSet:
    """[cv] test: the locked test set, taken out before the folds are made and scored once, after
    selection. One of ``split`` (the dataset's own split of that name), ``fraction`` (a seeded,
    stratified, group-aware share) or ``list`` (a file of paths, one a line)."""

    __test__ = False  # not a pytest test class

    split: Optional[StrictStr] = None
    fraction: Optional[Number] = None
    file: Annotated[Optional[StrictStr], AfterValidator(_test_list)] = Field(default=None, alias="list")
    #: "refit": the best configuration refit on every non-test row; "folds": its K fold models averaged.
    model: Annotated[StrictStr, one_of(TEST_MODELS)] = "refit"

    @model_validator(mode="after")
    def _one_source(self) -> TestSet:
        given = [name for name, value in (("split", self.split), ("fraction", self.fraction), ("list", self.file))
                 if value is not None]
        if len(given) != 1:
            raise problem('give one of split = "test", fraction = 0.1 or list = "FILE"'
                          + (f", not {' and '.join(given)}." if given else "."))
        if self.fraction is not None and not 0 < self.fraction < 1:
            raise problem(f"must be between 0 and 1, got {self.fraction}.", "fraction")
        return self

    @property
    def source(self) -> str:
        """The test set in words, e.g. 'split "test"', '10% of the images', 'the list test.txt'."""
        if self.split is not None:
            return f'the dataset\'s split "{self.split}"'
        if self.fraction is not None:
            return f"a seeded {self.fraction:.0%} share"
        return f"the list {Path(self.file).name}"
