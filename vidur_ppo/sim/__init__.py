"""The only package that imports vidur: compatibility fixes, predictor, cluster spec, driver, workloads, metrics."""
