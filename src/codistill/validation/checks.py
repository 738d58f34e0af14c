"""The data gate's checks, each a named Great Expectations expectation over one table."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import great_expectations as gx
import pandas as pd
from great_expectations.expectations import Expectation


def _error_text(row: pd.Series) -> str:
    return row["errors"]


@dataclass(frozen=True)
class Check:
    """One gate check: the expectations, the table they read, and how to name an offender."""

    name: str
    description: str
    expectations: tuple[Expectation, ...]
    detail: Callable[[pd.Series], str] = _error_text
    table: str = "samples"
    id_column: str = "sample_id"


CHECKS: tuple[Check, ...] = (
    Check(
        name="image_decodes",
        description="every image file exists and decodes",
        expectations=(
            gx.expectations.ExpectColumnValuesToBeInSet(column="image_ok", value_set=[1]),
        ),
    ),
    Check(
        name="mask_decodes",
        description="every mask file exists and decodes as a single-channel label image",
        expectations=(
            gx.expectations.ExpectColumnValuesToBeInSet(column="mask_ok", value_set=[1]),
        ),
    ),
    Check(
        name="mask_size_matches_image",
        description="each mask has its image's height and width",
        expectations=(
            gx.expectations.ExpectColumnPairValuesToBeEqual(
                column_A="image_size", column_B="mask_size", ignore_row_if="either_value_is_missing"
            ),
        ),
        detail=lambda row: f"image {row['image_size']}, mask {row['mask_size']}",
    ),
    Check(
        name="image_size_as_configured",
        description="every image has the dataset's size (validate.image_size)",
        expectations=(
            gx.expectations.ExpectColumnPairValuesToBeEqual(
                column_A="image_size",
                column_B="expected_image_size",
                ignore_row_if="either_value_is_missing",
            ),
        ),
        detail=lambda row: f"image {row['image_size']}, expected {row['expected_image_size']}",
    ),
    Check(
        name="label_values_valid",
        description="mask values are class ids or the void/ignore value",
        expectations=(
            gx.expectations.ExpectColumnValuesToBeInSet(
                column="invalid_label_pixels", value_set=[0]
            ),
        ),
        detail=lambda row: (
            f"invalid raw values {row['invalid_label_values']} in "
            f"{int(row['invalid_label_pixels'])} pixels"
        ),
    ),
    Check(
        name="no_content_in_two_splits",
        description="no image content (pixel hash) appears in more than one split",
        expectations=(
            gx.expectations.ExpectColumnValuesToBeInSet(
                column="splits_with_same_content", value_set=[1]
            ),
        ),
        detail=lambda row: f"content {row['content_hash'][:12]} is also in another split",
    ),
    Check(
        name="split_sizes",
        description="each split has the configured number of samples",
        table="splits",
        id_column="split",
        expectations=(
            gx.expectations.ExpectColumnPairValuesToBeEqual(
                column_A="samples", column_B="expected", ignore_row_if="either_value_is_missing"
            ),
        ),
        detail=lambda row: f"{row['samples']} samples, expected {int(row['expected'])}",
    ),
    Check(
        name="class_shares_within_bounds",
        description="each class's share of labelled training pixels lies in its bounds",
        table="classes",
        id_column="class_name",
        expectations=(
            gx.expectations.ExpectColumnPairValuesAToBeGreaterThanB(
                column_A="share", column_B="min_share", or_equal=True
            ),
            gx.expectations.ExpectColumnPairValuesAToBeGreaterThanB(
                column_A="max_share", column_B="share", or_equal=True
            ),
        ),
        detail=lambda row: (
            f"share {row['share']:.4f} outside [{row['min_share']}, {row['max_share']}]"
        ),
    ),
)
