// Command vcsim starts VMware's govmomi vCenter simulator (simulator.VPX) for the test suite.
//
// It prints one line, "VCSIM_URL <url>", once the server listens, and serves until it is
// signalled. The vAPI endpoint (/rest, tagging) is registered too, so that tags can be read.
package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"log"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
	_ "github.com/vmware/govmomi/vapi/simulator"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	useTLS := flag.Bool("tls", false, "serve https with a self-signed certificate")
	hosts := flag.Int("host", 3, "hosts per cluster")
	standalone := flag.Int("standalone-host", 1, "standalone hosts per datacenter")
	vms := flag.Int("vm", 2, "VMs per resource pool / standalone host")
	datastores := flag.Int("ds", 1, "local datastores")
	datacenters := flag.Int("dc", 1, "datacenters")
	clusters := flag.Int("cluster", 1, "clusters per datacenter")
	folders := flag.Int("folder", 0, "datacenters placed (with their sub folders) in a folder")
	apps := flag.Int("app", 0, "vApps per cluster")
	pods := flag.Int("pod", 0, "storage pods (datastore clusters) per cluster")
	username := flag.String("username", "", "only accept this user name (default: accept any non-empty credentials)")
	password := flag.String("password", "", "the password that goes with -username")
	refresh := flag.Duration("refresh-datastores", 0,
		"how often datastore capacity and free space are re-read from disk, as vCenter does periodically (0: never)")
	flag.Parse()

	model := simulator.VPX()
	model.ClusterHost = *hosts
	model.Host = *standalone
	model.Machine = *vms
	model.Datastore = *datastores
	model.Datacenter = *datacenters
	model.Cluster = *clusters
	model.Folder = *folders
	model.App = *apps
	model.Pod = *pods
	if err := model.Create(); err != nil {
		log.Fatal(err)
	}
	defer model.Remove()

	model.Service.Listen = &url.URL{Host: *listen}
	if *username != "" {
		// A Listen.User other than simulator.DefaultLogin makes SessionManager.Login compare
		// the credentials instead of accepting any non-empty pair (the vAPI /rest session
		// endpoint still accepts any non-empty pair).
		model.Service.Listen.User = url.UserPassword(*username, *password)
	}
	// Without this the blank vapi/simulator import registers nothing and /rest answers 404.
	model.Service.RegisterEndpoints = true
	if *useTLS {
		model.Service.TLS = new(tls.Config)
	}
	server := model.Service.NewServer()
	defer server.Close()

	if *refresh > 0 {
		go refreshDatastores(*refresh)
	}

	fmt.Printf("VCSIM_URL %s\n", server.URL.String())
	os.Stdout.Sync()

	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
	<-signals
}

// refreshDatastores re-reads every datastore's free space periodically. The simulator only
// does it on RefreshDatastore, whose response it then fails to encode (govmomi 0.24); a real
// vCenter refreshes these figures on its own schedule.
func refreshDatastores(every time.Duration) {
	for range time.Tick(every) {
		for _, obj := range simulator.Map.All("Datastore") {
			ds, ok := obj.(*simulator.Datastore)
			if !ok {
				continue
			}
			simulator.Map.WithLock(ds, func() {
				ds.RefreshDatastore(&types.RefreshDatastore{This: ds.Self})
			})
		}
	}
}
