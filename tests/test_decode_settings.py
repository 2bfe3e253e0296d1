"""`DecodeSettings`, the one decode-settings type: derived method, decode arguments, lengths
filled from what a model was trained at, dict round trip, and errors that name the field."""

import pytest

from t5pre.errors import ConfigError
from t5pre.models.decode_settings import DecodeSettings


def test_method_and_decode_arguments_follow_the_fields():
    assert DecodeSettings(max_decode_length=5).decode_kwargs() == {"max_length": 5,
                                                                   "method": "greedy"}
    beam = DecodeSettings(beam_size=4, length_penalty=1.0, max_decode_length=7)
    assert beam.method == "beam"
    assert beam.decode_kwargs() == {"max_length": 7, "method": "beam", "beam_size": 4,
                                    "alpha": 1.0}
    sample = DecodeSettings(sample=True, temperature=0.5, top_k=3, max_decode_length=2)
    assert sample.decode_kwargs() == {"max_length": 2, "method": "sample", "temperature": 0.5,
                                      "top_k": 3, "top_p": 1.0, "seed": 0}


def test_unset_lengths_come_from_the_trained_lengths_then_the_defaults():
    trained = DecodeSettings().resolved_for({"inputs": 128, "targets": 32})
    assert (trained.max_input_length, trained.max_decode_length) == (128, 32)
    given = DecodeSettings(max_decode_length=9).resolved_for({"inputs": 128, "targets": 32})
    assert (given.max_input_length, given.max_decode_length) == (128, 9)
    unknown = DecodeSettings().resolved_for(None)
    assert (unknown.max_input_length, unknown.max_decode_length) == (512, 128)


def test_dict_round_trip_keeps_every_field():
    settings = DecodeSettings(beam_size=3, length_penalty=0.8, max_decode_length=16,
                              max_input_length=64)
    data = settings.to_dict()
    assert data["method"] == "beam" and data["beam_size"] == 3
    assert DecodeSettings.from_dict(data) == settings


@pytest.mark.parametrize("data, expected", [
    ({"beam_sise": 2}, "unknown key 'beam_sise' (did you mean 'beam_size'?)"),
    ({"beam_size": 0}, "x.json: beam_size must be an integer >= 1, got 0"),
    ({"max_input_length": 1}, "max_input_length must be an integer >= 2"),
    ({"length_penalty": -1}, "length_penalty must be >= 0"),
    ({"sample": True, "beam_size": 2}, "cannot be combined"),
    ({"method": "greedy", "beam_size": 4}, "method 'greedy' does not match"),
])
def test_from_dict_errors_name_the_key(data, expected):
    with pytest.raises(ConfigError, match="x.json") as info:
        DecodeSettings.from_dict(data, where="x.json")
    assert expected in str(info.value)


def test_validation_names_the_command_line_flag_by_default():
    with pytest.raises(ConfigError, match="--beam-size must be an integer >= 1, got 0"):
        DecodeSettings(beam_size=0).validate()
    with pytest.raises(ConfigError, match="--targets-length must be an integer >= 1"):
        DecodeSettings(max_decode_length=0).validate()
    with pytest.raises(ConfigError, match="--beam must be"):
        DecodeSettings(beam_size=True).validate({"beam_size": "--beam"})
