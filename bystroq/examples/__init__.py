"""Example categories: `echo` (the smallest listener) and `annotation` (a realistic one).

Point a category at one with `listener: bystroq.examples.echo`; your own categories live
in your project's `listeners/` package (the default module is `listeners.<category>`).
"""
