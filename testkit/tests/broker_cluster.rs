//! The private broker cluster on its own: three nodes start and join, `amqp_urls` lists them,
//! and a killed node comes back into the cluster. Ignored by default because the api suite's
//! `broker_cluster` tests start (and exercise) the same cluster; run with `--ignored`.

use replog_testkit::{BrokerCluster, BrokerOptions, CLUSTER_SIZE};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread")]
#[ignore = "a minute of broker start-up; the api suite's broker_cluster tests cover it"]
async fn three_nodes_join_and_a_killed_one_rejoins() {
    let began = Instant::now();
    let mut cluster = BrokerCluster::start_new(BrokerOptions::default())
        .await
        .expect("the cluster starts");
    eprintln!("cluster started in {:?}", began.elapsed());
    assert_eq!(cluster.amqp_urls().split(',').count(), CLUSTER_SIZE);
    assert_eq!(cluster.running_nodes(0).await.unwrap().len(), CLUSTER_SIZE);

    cluster.kill(1).await.expect("SIGKILL");
    let seen = cluster.running_nodes(0).await.unwrap();
    assert_eq!(seen.len(), CLUSTER_SIZE - 1, "{seen:?}");
    let began = Instant::now();
    cluster.start(1).await.expect("the killed node starts");
    cluster
        .wait_all_running(Duration::from_secs(60))
        .await
        .expect("and rejoins");
    eprintln!("restart and rejoin took {:?}", began.elapsed());
}
