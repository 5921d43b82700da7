"""The only package that imports the `stripe` SDK: a gateway in Tollgate's own terms."""
