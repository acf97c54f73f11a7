use multimat::engine::gradcheck::random_vec;
use multimat::engine::ops::conv3d::*;
fn main() {
    let which = std::env::args().nth(1).unwrap_or_default();
    let dims = Conv3dDims { n: 8, c: 128, in_dims: [8; 3], oc: 128, groups: 32, window: Window3d::cube(3, 1, 1) };
    let x = random_vec(dims.input_len(), 3, 1.0);
    let w = random_vec(dims.weight_len(), 4, 0.1);
    let dout = random_vec(dims.output_len(), 5, 1.0);
    let mut out = vec![0.0f32; dims.output_len()];
    let mut dx = vec![0.0f32; dims.input_len()];
    let mut dw = vec![0.0f32; dims.weight_len()];
    for _ in 0..30 {
        if which == "fwd" { conv3d_forward(&mut out, &x, &w, None, &dims); }
        else { conv3d_backward(Some(&mut dx), &mut dw, None, &dout, &x, &w, &dims); }
    }
}
