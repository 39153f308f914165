"""Value mappings from a raster's units to the model's [0, 1]: parsing, exact round trips of integer
units, the fit check and the choice of a mapping (given, trained, uint8's; never guessed)."""

import numpy as np
import pytest

from neurop_jax.errors import InputError
from neurop_jax.io.values import ValueMapping, choose


def test_value_mapping_round_trips_integer_units():
  mapping = ValueMapping.parse("0:10000", 4)
  assert mapping.low == (0.0,) * 4 and str(mapping) == "0:10000"
  values = np.random.default_rng(0).integers(0, 10001, (50, 40, 4)).astype(np.uint16)
  np.testing.assert_array_equal(mapping.from_unit(mapping.to_unit(values), np.uint16), values)
  per_band = ValueMapping.parse("0:10000, -100:100", 2)
  assert per_band.high == (10000.0, 100.0) and str(per_band) == "0:10000,-100:100"
  np.testing.assert_allclose(per_band.span(), [10000, 200])
  np.testing.assert_array_equal(per_band.from_unit(np.array([[2.0, -1.0]]), np.int16),
                                [[10000, -100]])
  for text, message in [("0:10000,0:1", "2 ranges for 4 bands"), ("a:b", "cannot read"),
                        ("5:5", "LOW < HIGH")]:
    with pytest.raises(InputError, match=message):
      ValueMapping.parse(text, 4)


def test_values_outside_the_mapping_are_clipped_a_little_and_refused_a_lot():
  mapping = ValueMapping.parse("0:255", 1)
  valid = np.ones((10, 10), bool)
  values = np.full((10, 10, 1), 100, np.uint16)
  mapping.check_fit(values, valid, "x.tif")
  values[0, 0] = 300
  with pytest.warns(UserWarning, match="1.00% .* clipped"):
    mapping.check_fit(values, valid, "x.tif")
  values[:5] = 9000
  with pytest.raises(InputError, match=r"x.tif: 50.0% of band 1's values lie outside the value "
                                       r"mapping 0:255 \(they span 100..9000\): give --values"):
    mapping.check_fit(values, valid, "x.tif")
  valid[:5] = False  # the out-of-range pixels are nodata: they do not count
  mapping.check_fit(values, valid, "x.tif")


def test_a_mapping_is_chosen_never_guessed():
  assert str(choose("0:10000", "0:3000", np.uint16, 3, "x")) == "0:10000"
  assert str(choose(None, "0:3000", np.uint16, 3, "x")) == "0:3000"
  assert str(choose(None, "", np.uint8, 3, "x")) == "0:255"
  for dtype in (np.uint16, np.int16, np.float32):
    with pytest.raises(InputError, match=r"x holds .* values: give .* --values LOW:HIGH"):
      choose(None, "", dtype, 3, "x")
