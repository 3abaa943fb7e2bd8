"""What an API token may do, apart from the models so that `heteroplane` can offer it without loading SQLModel."""

from enum import StrEnum


class Role(StrEnum):
    """What a token may do. admin ⊃ operator ⊃ viewer."""

    admin = "admin"
    operator = "operator"
    viewer = "viewer"
