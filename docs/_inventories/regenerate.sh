#!/usr/bin/env bash
# Regenerates the intersphinx inventories checked in beside this script, without reaching any
# documentation site (CI and the developers' machines reach only the package registries):
#   python.inv  Python's own, as Debian ships it with the built documentation (python3.X-doc);
#   anyio.inv   built here with Sphinx from anyio's sdist on PyPI (its docs/ folder);
#   trio.inv    built here with Sphinx from trio's sdist on PyPI (its docs/source/ folder).
# The inventories hold page names relative to each site's root, so the ones built from the
# sdists point into https://anyio.readthedocs.io/en/stable/ and https://trio.readthedocs.io/en/stable/
# as the published ones do. Run it as root on Debian, after a change of the anyio or trio
# version the package is tested with:  bash docs/_inventories/regenerate.sh [anyio-version] [trio-version]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
anyio_version="${1:-$(python3 -c 'import importlib.metadata as m; print(m.version("anyio"))' 2>/dev/null || echo 4.16.0)}"
trio_version="${2:-$(python3 -c 'import importlib.metadata as m; print(m.version("trio"))' 2>/dev/null || echo 0.35.0)}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# Python: the Debian package of the interpreter's documentation carries objects.inv.
py="$(python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
apt-get install -y -q "python${py}-doc" >/dev/null
cp "/usr/share/doc/python${py}/html/objects.inv" "$here/python.inv"

# anyio and trio: their documentation sources ship in their sdists.
python3 -m venv "$work/venv"
pip="$work/venv/bin/pip"
"$pip" install -q "sphinx>=8.2,<9" "sphinx_rtd_theme>=3" sphinx-autodoc-typehints sphinx-tabs \
    sphinxcontrib-jquery sphinxcontrib-trio sphinx-codeautolink towncrier packaging \
    attrs sortedcontainers idna outcome sniffio immutables pyOpenSSL
"$pip" download -q --no-deps --no-binary :all: -d "$work" "anyio==$anyio_version" "trio==$trio_version"
tar xzf "$work/anyio-$anyio_version.tar.gz" -C "$work"
tar xzf "$work/trio-$trio_version.tar.gz" -C "$work"
"$pip" install -q --no-deps "$work/anyio-$anyio_version.tar.gz" "$work/trio-$trio_version.tar.gz"

# Their own intersphinx look-ups fail here (warnings, not errors), except that trio's conf.py
# needs Python's inventory to be loaded: point it at the local copy.
sed -i "s|\"python\": (\"https://docs.python.org/3\", None)|\"python\": (\"https://docs.python.org/3\", \"$here/python.inv\")|" \
    "$work/trio-$trio_version/docs/source/conf.py"
"$work/venv/bin/sphinx-build" -q -b html "$work/anyio-$anyio_version/docs" "$work/anyio-html" 2>/dev/null
"$work/venv/bin/sphinx-build" -q -b html "$work/trio-$trio_version/docs/source" "$work/trio-html" 2>/dev/null
cp "$work/anyio-html/objects.inv" "$here/anyio.inv"
cp "$work/trio-html/objects.inv" "$here/trio.inv"
echo "python $py, anyio $anyio_version, trio $trio_version: inventories written to $here"
