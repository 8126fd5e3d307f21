"""The specs shipped with gfdsl (package data `gfdsl.specs`): `gfdsl list specs` names
them, and `gfdsl run NAME` finds one by name from any folder."""
