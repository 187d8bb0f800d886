"""The one exception type of the converters: the message names the checkpoint, the tensor and both shapes."""


class ConversionError(ValueError):
    """A checkpoint that cannot be converted as asked (wrong shape, missing tensor, refused output folder)."""


def shape_error(what: str, name: str, expected, actual) -> ConversionError:
    return ConversionError(f"{what}: tensor {name!r} has shape {tuple(actual)}, expected {tuple(expected)}")
