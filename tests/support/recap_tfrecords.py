"""Write the rows of recap_data_fixtures as TFRecord files of tf.Example, as the original stored data."""
from __future__ import annotations

import gzip
import json
import os
import shutil

import numpy as np
from recap_data_fixtures import row_columns

KIND = {"float_list": "float", "int64_list": "int", "bytes_list": "byte"}


def write_tfrecord(path, schema_path: str, row_ids: np.ndarray, gzipped: bool = True, skip: tuple = ()) -> None:
    import tfrecord

    schema = json.load(open(schema_path))["schema"]
    columns = row_columns(row_ids)
    raw = str(path) + ".raw"
    writer = tfrecord.TFRecordWriter(raw)
    for row in range(len(row_ids)):
        example = {}
        for entry in schema:
            name = entry["feature_name"]
            if name in skip:
                continue
            value = columns[name]
            if entry["length"] == -1:
                values = value.values[value.offsets[row]: value.offsets[row + 1]].tolist()
            else:
                values = np.atleast_1d(value[row]).tolist()
            example[name] = (values, KIND[entry["dtype"]])
        writer.write(example)
    writer.close()
    if gzipped:
        with open(raw, "rb") as source, gzip.open(path, "wb") as target:
            shutil.copyfileobj(source, target)
        os.remove(raw)
    else:
        shutil.move(raw, path)
