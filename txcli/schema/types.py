"""The recipe's building blocks: strict numbers, upper bounds, and the base of every section."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Strict
from pydantic.types import AllowInfNan
from pydantic_core import PydanticCustomError

# ---------------------------------------------------------------------------------------------
# numbers: strict, so that `heads: true` is an error and not 1
#
# A bool is never a number. YAML 1.1 reads `3e-4` (no dot) as a string, and recipes write learning
# rates that way, so a string spelling a plain decimal number (digits, optional point, optional
# exponent) is read as that number, in int and float fields alike; any other string is refused.
# An int field takes a whole number however it is spelled (4, 4.0, "1e5"): 4.0 *is* 4; 4.5 is
# refused. inf and nan are refused everywhere.

_NUMBER_TEXT = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_DIGITS = re.compile(r"[-+]?\d{1,64}")


def _number_from_text(value: Any) -> Any:
    if isinstance(value, str) and _NUMBER_TEXT.fullmatch(value):
        # float() turns an absurdly long spelling into inf, which is then refused; int() would raise
        return int(value) if _DIGITS.fullmatch(value) else float(value)
    return value


def _whole_number(value: Any) -> Any:
    value = _number_from_text(value)
    if isinstance(value, float) and value.is_integer():
        if abs(value) > 2**53:  # no longer exact as a float, and far past every bound here
            raise PydanticCustomError("number_too_large", "Input is far out of range")
        return int(value)
    return value


Int = Annotated[int, BeforeValidator(_whole_number), Strict()]
Float = Annotated[float, BeforeValidator(_number_from_text), Strict(), AllowInfNan(False)]
Bool = Annotated[bool, Strict()]  # true/false (YAML also reads yes/no, on/off); not 1, not "true"

# Upper bounds: far past any real model or run, low enough that a slip (an extra zero, 10^30)
# is an error here instead of an allocation that takes the machine down. README: Recipes, Limits.
MAX_WIDTH = 16_384  # d_model
MAX_FF = 65_536
MAX_HEADS = 256
MAX_LAYERS = 64
MAX_VOCAB = 1_000_000
MAX_LEN = 65_536  # subword tokens per sentence side
MAX_BATCH_TOKENS = 10_000_000
MAX_STEPS = 1_000_000_000


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)
