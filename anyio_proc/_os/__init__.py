"""Every OS mechanism of the package, one module per idea.

Nothing outside this folder tests ``sys.platform`` or ``os.name``: supporting another OS
means working here only. The modules above import what they need from these modules by
name; this package itself exports nothing.
"""
