"""The FSC contract domain: parsing, hashing, validation, signatures, state and access tokens.

Pure logic without HTTP or storage, so the Manager's endpoints, its store and the Directory
share one reading of the specification. Where the specification contradicts itself, the
modules follow READING.md (the project's reading of FSC) and say so where it matters.
"""
