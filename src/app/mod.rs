//! The Leptos UI: the HTML shell, the router and the pages.

mod interop;
mod pages;

use leptos::prelude::*;
use leptos_meta::{provide_meta_context, MetaTags, Stylesheet, Title};
use leptos_router::components::{Route, Router, Routes};
use leptos_router::{ParamSegment, StaticSegment};

pub fn shell(options: LeptosOptions) -> impl IntoView {
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8"/>
                <meta name="viewport" content="width=device-width, initial-scale=1"/>
                <AutoReload options=options.clone()/>
                <HydrationScripts options/>
                <MetaTags/>
            </head>
            <body>
                <App/>
            </body>
        </html>
    }
}

#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    view! {
        <Stylesheet id="leptos" href="/pkg/livestage.css"/>
        <Title text="livestage"/>
        <Router>
            <header class="topbar">
                <a class="brand" href="/">"livestage"</a>
                <nav aria-label="main">
                    <a href="/">"Watch"</a>
                    <a href="/broadcast">"Broadcast"</a>
                    <a href="/dashboard">"Dashboard"</a>
                </nav>
            </header>
            <main>
                <Routes fallback=|| view! { <p class="notice">"Page not found."</p> }>
                    <Route path=StaticSegment("") view=pages::HomePage/>
                    <Route path=(StaticSegment("c"), ParamSegment("name")) view=pages::ViewerPage/>
                    <Route path=(StaticSegment("c"), ParamSegment("name"), StaticSegment("broadcast")) view=pages::BroadcastPage/>
                    <Route path=StaticSegment("broadcast") view=pages::BroadcastPage/>
                    <Route path=StaticSegment("dashboard") view=pages::DashboardPage/>
                </Routes>
            </main>
        </Router>
    }
}
