use super::*;

fn addr(i: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, i], 7100))
}

fn host(i: u8, load: u32, procs: &[(i64, u32, u64)]) -> Host {
    Host {
        addr: addr(i),
        load,
        procs: procs
            .iter()
            .map(|&(pid_d, cpu, stay_s)| Candidate {
                pid_d,
                cpu,
                stay: Duration::from_secs(stay_s),
            })
            .collect(),
        settling: false,
    }
}

const POLICY: Policy = Policy {
    threshold: 500,
    min_stay: Duration::from_secs(10),
};

fn mv(pid_d: i64, from: u8, to: u8) -> Decision {
    Decision {
        pid_d,
        from: addr(from),
        to: addr(to),
    }
}

#[test]
fn the_busy_host_sends_the_process_that_evens_the_pair_best() {
    let hosts = [
        host(1, 2000, &[(1, 333, 60), (2, 900, 60), (3, 1200, 60)]),
        host(2, 0, &[]),
        host(3, 400, &[]),
    ];
    // diff 2000 to host 2: 900 leaves |2000 - 1800| = 200 apart, the
    // best; 1200 would leave 400.
    assert_eq!(decide(&hosts, &POLICY, &Failed::new()), vec![mv(2, 1, 2)]);
}

#[test]
fn within_the_threshold_nothing_moves() {
    let hosts = [host(1, 1400, &[(1, 300, 60)]), host(2, 900, &[])];
    assert_eq!(decide(&hosts, &POLICY, &Failed::new()), vec![]);
    let hosts = [host(1, 1401, &[(1, 300, 60)]), host(2, 900, &[])];
    assert_eq!(decide(&hosts, &POLICY, &Failed::new()), vec![mv(1, 1, 2)]);
}

#[test]
fn a_process_that_has_not_stayed_long_enough_stays() {
    let hosts = [host(1, 2000, &[(1, 500, 9), (2, 500, 10)]), host(2, 0, &[])];
    assert_eq!(decide(&hosts, &POLICY, &Failed::new()), vec![mv(2, 1, 2)]);
    let hosts = [host(1, 2000, &[(1, 500, 9)]), host(2, 0, &[])];
    assert_eq!(decide(&hosts, &POLICY, &Failed::new()), vec![]);
}

#[test]
fn a_move_that_would_only_swap_the_imbalance_is_not_made() {
    // One process makes all of the busy host's load: moving it would
    // make the other host as busy, and the next window would move it
    // back.
    let hosts = [host(1, 1000, &[(1, 1000, 60)]), host(2, 0, &[])];
    assert_eq!(decide(&hosts, &POLICY, &Failed::new()), vec![]);
    // Nor one whose load is more than the difference.
    let hosts = [host(1, 1800, &[(1, 1100, 60)]), host(2, 700, &[])];
    assert_eq!(decide(&hosts, &POLICY, &Failed::new()), vec![]);
}

#[test]
fn a_balanced_outcome_is_stable() {
    // Six processes of 333 spread 2/2/2: nothing moves, and from 3/2/1
    // exactly one move ends at 2/2/2.
    let p = |a: i64, b: i64| [(a, 333, 60), (b, 333, 60)];
    let hosts = [
        host(1, 666, &p(1, 2)),
        host(2, 666, &p(3, 4)),
        host(3, 666, &p(5, 6)),
    ];
    assert_eq!(decide(&hosts, &POLICY, &Failed::new()), vec![]);
    let hosts = [
        host(1, 999, &[(1, 333, 60), (2, 333, 60), (3, 333, 60)]),
        host(2, 666, &p(4, 5)),
        host(3, 333, &[(6, 333, 60)]),
    ];
    assert_eq!(decide(&hosts, &POLICY, &Failed::new()), vec![mv(1, 1, 3)]);
}

#[test]
fn each_host_is_in_one_move_per_window_and_settling_hosts_none() {
    let hosts = [
        host(1, 3000, &[(1, 1000, 60), (2, 1000, 60), (3, 1000, 60)]),
        host(2, 2900, &[(4, 900, 60), (5, 1000, 60), (6, 1000, 60)]),
        host(3, 0, &[]),
        host(4, 100, &[]),
    ];
    assert_eq!(
        decide(&hosts, &POLICY, &Failed::new()),
        vec![mv(1, 1, 3), mv(5, 2, 4)]
    );
    let mut hosts = hosts;
    hosts[2].settling = true;
    assert_eq!(decide(&hosts, &POLICY, &Failed::new()), vec![mv(1, 1, 4)]);
    hosts[0].settling = true;
    assert_eq!(decide(&hosts, &POLICY, &Failed::new()), vec![mv(5, 2, 4)]);
}

#[test]
fn a_failed_pair_is_not_tried_again_but_another_target_is() {
    let hosts = [
        host(1, 2000, &[(1, 500, 60)]),
        host(2, 0, &[]),
        host(3, 100, &[]),
    ];
    let mut failed = Failed::new();
    failed.insert((1, addr(1), addr(2)));
    assert_eq!(decide(&hosts, &POLICY, &failed), vec![mv(1, 1, 3)]);
    failed.insert((1, addr(1), addr(3)));
    assert_eq!(decide(&hosts, &POLICY, &failed), vec![]);
}

fn cfg() -> BalanceConfig {
    BalanceConfig {
        enabled: true,
        interval: Duration::from_secs(1),
        threshold_milli: 500,
        min_stay: Duration::from_secs(0),
    }
}

fn lp(pid_d: i64, cpu_ms: u32) -> LoadProc {
    LoadProc {
        pid_d,
        pid: pid_d as i32 + 100,
        name: format!("p{pid_d}"),
        cpu: cpu_ms,
        stay_ms: 60_000,
    }
}

#[test]
fn windows_add_reports_up_and_moves_are_followed_to_their_end() {
    let mut b = Balancer::default();
    let up = [addr(1), addr(2)];
    let t0 = Instant::now();
    let timeout = Duration::from_secs(5);
    // Two reports of 250 ms: 2 CPUs busy on host 1, of which pid_d 7
    // used a quarter and 8 a half.
    b.report(addr(1), 250, 500, vec![lp(7, 50), lp(8, 100)]);
    b.report(addr(1), 250, 500, vec![lp(7, 75), lp(8, 150)]);
    b.report(addr(2), 500, 0, vec![]);
    let mut at = HashMap::from([(7, addr(1)), (8, addr(1))]);
    let moves = b.round(t0, &cfg(), timeout, &up, |p| at.get(&p).copied());
    assert_eq!(moves, vec![mv(8, 1, 2)]);
    let (hosts, log) = b.snapshot(100);
    assert_eq!(hosts[0].load, 2000);
    assert_eq!(hosts[0].procs[0].cpu, 250);
    assert_eq!(hosts[0].procs[1].cpu, 500);
    assert_eq!(hosts[1].load, 0);
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].outcome, 0);
    // Pending: both hosts settle, nothing else moves.
    b.report(addr(1), 500, 1000, vec![lp(7, 125), lp(8, 250)]);
    b.report(addr(2), 500, 0, vec![]);
    let t1 = t0 + Duration::from_secs(1);
    assert_eq!(
        b.round(t1, &cfg(), timeout, &up, |p| at.get(&p).copied()),
        vec![]
    );
    // Done: the window that held it settles too.
    at.insert(8, addr(2));
    b.report(addr(1), 500, 250, vec![lp(7, 125)]);
    b.report(addr(2), 500, 250, vec![lp(8, 250)]);
    let t2 = t1 + Duration::from_secs(1);
    assert_eq!(
        b.round(t2, &cfg(), timeout, &up, |p| at.get(&p).copied()),
        vec![]
    );
    assert_eq!(b.snapshot(100).1[0].outcome, 1);
}

#[test]
fn a_move_not_seen_done_in_time_fails_and_its_pair_is_left_alone() {
    let mut b = Balancer::default();
    let up = [addr(1), addr(2)];
    let t0 = Instant::now();
    let timeout = Duration::from_secs(3);
    let at = HashMap::from([(7, addr(1))]);
    let feed = |b: &mut Balancer| {
        b.report(addr(1), 1000, 2000, vec![lp(7, 500)]);
        b.report(addr(2), 1000, 0, vec![]);
    };
    feed(&mut b);
    assert_eq!(
        b.round(t0, &cfg(), timeout, &up, |p| at.get(&p).copied()),
        vec![mv(7, 1, 2)]
    );
    for s in 1..=6 {
        feed(&mut b);
        let t = t0 + Duration::from_secs(s);
        assert_eq!(
            b.round(t, &cfg(), timeout, &up, |p| at.get(&p).copied()),
            vec![],
            "second {s}"
        );
    }
    assert_eq!(b.snapshot(100).1[0].outcome, 2);
}

#[test]
fn disabled_it_measures_and_moves_nothing() {
    let mut b = Balancer::default();
    let off = BalanceConfig {
        enabled: false,
        ..cfg()
    };
    b.report(addr(1), 1000, 2000, vec![lp(7, 500)]);
    b.report(addr(2), 1000, 0, vec![]);
    let moves = b.round(
        Instant::now(),
        &off,
        Duration::from_secs(3),
        &[addr(1), addr(2)],
        |_| Some(addr(1)),
    );
    assert_eq!(moves, vec![]);
    assert_eq!(b.snapshot(100).0[0].load, 2000);
}
