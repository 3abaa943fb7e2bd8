"""Actuators: the only way heteroplane changes what runs where."""
