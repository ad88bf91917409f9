"""`# Copied from` marks: every copy in the repository equals its source, and the checker catches drift."""

import textwrap
from pathlib import Path

import pytest

from tests import check_copies

REPO = Path(__file__).resolve().parents[1]


def test_every_copy_in_the_repository_is_in_step_with_its_source():
    assert check_copies.check() == []


def test_the_repeated_image_processor_helpers_are_marked():
    marked = {
        copy.source.rsplit(".", 1)[-1]
        for path in (REPO / "hfmed" / "models").glob("*/image_processing_*.py")
        for copy in check_copies.find_copies(path)
    }
    assert {"_check_names", "_check_size", "_check_finite", "_read_dicom", "_one_line", "_DICOM_MAGIC"} <= marked


def write_tree(root: Path, source: str, copy: str) -> None:
    for name, text in (("a", source), ("b", copy)):
        folder = root / "hfmed" / "models" / name
        folder.mkdir(parents=True)
        (folder / f"module_{name}.py").write_text(textwrap.dedent(text))


SOURCE = '''
    def _check(value):
        if value < 0:
            raise ValueError("value must be >= 0 for a slice")
        return value
'''


def test_a_copy_with_replacements_is_in_step(tmp_path):
    copy = '''
        # Copied from hfmed.models.a.module_a._check with a slice->an image
        def _check(value):
            if value < 0:
                raise ValueError("value must be >= 0 for an image")
            return value
    '''
    write_tree(tmp_path, SOURCE, copy)
    assert check_copies.check(tmp_path) == []


def test_a_drifted_copy_is_reported_and_fixed(tmp_path):
    drifted = '''
        class Holder:
            # Copied from hfmed.models.a.module_a._check
            def _check(value):
                if value <= 0:
                    raise ValueError("value must be >= 0 for a slice")
                return value
    '''
    write_tree(tmp_path, SOURCE, drifted)
    problems = check_copies.check(tmp_path)
    assert len(problems) == 1 and "module_b.py:3: the copy of hfmed.models.a.module_a._check differs" in problems[0]
    check_copies.check(tmp_path, fix=True)
    assert check_copies.check(tmp_path) == []
    fixed = (tmp_path / "hfmed" / "models" / "b" / "module_b.py").read_text()
    assert "        if value < 0:\n" in fixed  # re-indented into the class


def test_a_mark_naming_nothing_and_an_unmarked_duplicate_are_reported(tmp_path):
    copy = '''
        # Copied from hfmed.models.a.module_a._gone
        def _check(value):
            return value
    '''
    write_tree(tmp_path, SOURCE, copy)
    assert "defines no '_gone'" in check_copies.check(tmp_path)[0]
    (tmp_path / "hfmed" / "models" / "b" / "module_b.py").write_text(textwrap.dedent(SOURCE))
    assert check_copies.check(tmp_path) == [
        "_check is repeated without a '# Copied from' mark in hfmed/models/a/module_a.py, "
        "hfmed/models/b/module_b.py: mark the copies"
    ]


def test_a_mark_must_sit_on_a_definition(tmp_path):
    write_tree(tmp_path, SOURCE, "def f():\n    # Copied from hfmed.models.a.module_a._check\n    x = 1\n")
    with pytest.raises(ValueError, match="must sit right above the definition"):
        check_copies.check(tmp_path)
