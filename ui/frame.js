// The render loop: changes only ask for a frame with `schedule()`, and the
// renderer given to `onFrame` then runs at most once per animation frame,
// however many changes came in between.

let renderer = () => {};
let requested = false;

export function onFrame(render) {
  renderer = render;
}

export function schedule() {
  if (!requested) {
    requested = true;
    requestAnimationFrame(runFrame);
  }
}

function runFrame() {
  requested = false;
  renderer();
}
