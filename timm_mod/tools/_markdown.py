"""Markdown sections that a tool regenerates between two markers in a file (the README's tables)."""
import re
from pathlib import Path

__all__ = ['has_section', 'replace_section']


def has_section(path: str, name: str) -> bool:
    return f'<!-- {name}:begin -->' in Path(path).read_text()


def replace_section(path: str, name: str, body: str) -> None:
    """Replace what stands between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->`` in the file with `body`."""
    begin, end = f'<!-- {name}:begin -->', f'<!-- {name}:end -->'
    file = Path(path)
    pattern = re.compile(re.escape(begin) + '.*?' + re.escape(end), re.S)
    file.write_text(pattern.sub(lambda _: f'{begin}\n{body}\n{end}', file.read_text()))
