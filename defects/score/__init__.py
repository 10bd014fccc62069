"""`defects score`: an image archive (a folder or an S3 prefix) scored on Ray Data.

Modules, one job each: `storage` (local or S3 through the machine's settings), `model` (the
model shipped to the actors), `reading` (listing and decoding tasks), `scorer` (the actor
around the product's predictor), `parts` (Parquet parts written whole; what resume reads),
`summary`, `cluster` (local Ray or a cluster; the actor pool) and `run` (the pipeline).
"""
