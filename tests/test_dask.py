"""fastbp's estimators on a Dask cluster: a real distributed.LocalCluster of
two worker processes with one thread each, on 127.0.0.1."""

import warnings

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")
joblib = pytest.importorskip("joblib")
pytest.importorskip("sklearn")
from sklearn.model_selection import GridSearchCV  # noqa: E402

import fastbp  # noqa: E402
from fastbp.sklearn import fit_threads  # noqa: E402


@pytest.fixture(scope="module")
def client():
    """Started and closed here, bounded in time."""
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       host="127.0.0.1", dashboard_address=None,
                                       worker_dashboard_address=None)
    client = distributed.Client(cluster, timeout=120)
    yield client
    client.close(timeout=60)
    cluster.close(timeout=60)


def search():
    return GridSearchCV(fastbp.MLPClassifier(hidden_layer_sizes=(8,), max_iter=15,
                                             random_state=0, device="cpu"),
                        {"alpha": [1e-4, 1e-1], "learning_rate_init": [1e-3, 1e-2]}, cv=2,
                        n_jobs=-1)


def test_grid_search_spreads_over_the_workers_and_scores_as_in_process(client):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(240, 10))
    y = (X[:, 0] + X[:, 1] ** 2 > 1).astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning
        with distributed.get_task_stream(client) as tasks, joblib.parallel_backend("dask"):
            remote = search().fit(X, y)
        local = search().set_params(n_jobs=1).fit(X, y)
    np.testing.assert_array_equal(remote.cv_results_["mean_test_score"],
                                  local.cv_results_["mean_test_score"])
    assert remote.best_params_ == local.best_params_
    workers = {task["worker"] for task in tasks.data}
    assert workers == set(client.scheduler_info()["workers"])  # both did some of it
    # one Numba thread per Dask thread in each worker: no oversubscription
    counts = [client.submit(fit_threads, workers=[address], pure=False).result(timeout=120)
              for address in workers]
    assert counts == [1, 1]
    assert fit_threads() == fastbp.sklearn.numba.get_num_threads()  # not in a worker
