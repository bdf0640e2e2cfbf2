//! The shortest path through the API: a demo job streamed from its
//! snapshot to completed.

use crate::helpers::*;

#[tokio::test]
async fn a_demo_job_streams_from_snapshot_to_completed() {
    let app = TestApp::spawn().await;
    let job = app.create_demo(demo(5, 10)).await;
    let id = job["id"].as_str().unwrap();
    let events = app.subscribe(id).await.all().await;
    assert_well_formed(&events);
    assert_eq!(events.last().unwrap().event, "completed");
    assert_eq!(events.last().unwrap().data["progress"], 1.0);
}
