"""Inventory names as the API spells them, and datastore paths whose names hold "]"."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mover.vsphere.disks import split_datastore_path
from mover.vsphere.names import escape, matches, unescape


@given(st.text())
def test_unescape_inverts_escape(name: str) -> None:
    assert unescape(escape(name)) == name


@pytest.mark.parametrize(
    ("api", "typed"),
    [
        pytest.param("web%2f01 100%25", "web/01 100%", id="slash-and-percent"),
        pytest.param("a%5Cb", "a\\b", id="backslash-uppercase-hex"),
        pytest.param("wéb 01+x]", "wéb 01+x]", id="kept-as-typed"),
        pytest.param("100%2525", "100%25", id="escaped-percent-then-digits"),
    ],
)
def test_names_match_either_spelling(api: str, typed: str) -> None:
    assert unescape(api) == typed
    assert matches(api, typed) and matches(api, api)
    assert not matches(api, typed + "x")


@pytest.mark.parametrize(
    ("file", "known", "split"),
    [
        pytest.param("[LocalDS_0] vm/vm.vmdk", (), ("LocalDS_0", "vm/vm.vmdk"), id="plain"),
        pytest.param("[ds 1+100%25 ü] a] b/a] b.vmdk", (), ("ds 1+100%25 ü", "a] b/a] b.vmdk"),
                     id="bracket-in-path"),
        pytest.param("[x]y] vm/vm.vmdk", (), ("x]y", "vm/vm.vmdk"), id="bracket-in-datastore"),
        pytest.param("[x] y] vm/vm.vmdk", ("x] y",), ("x] y", "vm/vm.vmdk"),
                     id="bracket-space-in-datastore-known"),
        pytest.param("[x] y] vm/vm.vmdk", ("x", "x] y"), ("x] y", "vm/vm.vmdk"),
                     id="longest-known-wins"),
    ],
)
def test_split_datastore_path(file: str, known: tuple[str, ...], split: tuple[str, str]) -> None:
    assert split_datastore_path(file, known) == split
